"""Shape of the whisperwire.v1 API as seen through the committed, generated descriptors."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_ROOT = Path(__file__).resolve().parents[1]
# The generated stubs live in api/; make them importable when the project is not installed.
if str(_ROOT / "api") not in sys.path:
    sys.path.insert(0, str(_ROOT / "api"))

from whisperwire.v1 import transcription_service_pb2 as pb  # noqa: E402
from whisperwire.v1 import transcription_service_pb2_grpc as pb_grpc  # noqa: E402

SERVICE = pb.DESCRIPTOR.services_by_name["TranscriptionService"]


def _oneof_members(message: type[Message], oneof: str) -> list[str]:
    return [f.name for f in message.DESCRIPTOR.oneofs_by_name[oneof].fields]


def test_package_and_service() -> None:
    assert pb.DESCRIPTOR.package == "whisperwire.v1"
    assert pb.DESCRIPTOR.name == "whisperwire/v1/transcription_service.proto"
    assert SERVICE.full_name == "whisperwire.v1.TranscriptionService"
    assert [m.name for m in SERVICE.methods] == ["Transcribe", "StreamAudio", "GetServiceInfo"]
    assert hasattr(pb_grpc, "TranscriptionServiceStub")
    assert hasattr(pb_grpc, "add_TranscriptionServiceServicer_to_server")


@pytest.mark.parametrize(
    ("method", "client_streaming", "server_streaming"),
    [("Transcribe", False, False), ("StreamAudio", True, True), ("GetServiceInfo", False, False)],
)
def test_method_kinds_and_unique_messages(
    method: str, client_streaming: bool, server_streaming: bool
) -> None:
    m = SERVICE.methods_by_name[method]
    assert m.client_streaming is client_streaming
    assert m.server_streaming is server_streaming
    assert m.input_type.name == f"{method}Request"
    assert m.output_type.name == f"{method}Response"


def test_stream_request_oneof() -> None:
    assert _oneof_members(pb.StreamAudioRequest, "request") == [
        "config",
        "audio",
        "end_utterance",
        "cancel_utterance",
    ]
    # Every field of the request is inside the oneof.
    assert len(pb.StreamAudioRequest.DESCRIPTOR.fields) == 4


def test_stream_response_oneof_and_common_fields() -> None:
    assert _oneof_members(pb.StreamAudioResponse, "event") == [
        "session_started",
        "speech_event",
        "partial_result",
        "segment_result",
        "final_result",
    ]
    common = [
        f.name for f in pb.StreamAudioResponse.DESCRIPTOR.fields if f.containing_oneof is None
    ]
    assert common == ["utterance_id", "sequence", "audio_received_offset"]


def test_transcribe_format_oneof() -> None:
    assert _oneof_members(pb.TranscribeRequest, "format") == ["container", "raw"]


def test_enum_zero_values_are_unspecified() -> None:
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        assert enum.values_by_number[0].name.endswith("_UNSPECIFIED"), enum.name


def test_explicit_presence_where_unset_has_meaning() -> None:
    cases: list[tuple[type[Message], str]] = [
        (pb.RecognitionConfig, "temperature"),
        (pb.Segment, "avg_logprob"),
        (pb.Segment, "no_speech_prob"),
        (pb.Transcript, "language_probability"),
        (pb.AudioChunk, "sequence"),
    ]
    for message, field in cases:
        assert message.DESCRIPTOR.fields_by_name[field].has_presence, (message, field)


def test_durations_follow_naming() -> None:
    """Positions are *_offset (AIP-142), spans *_duration, plus a few named intervals."""
    allowed = {"offset", "idle_timeout", "partial_interval", "segment_silence"}
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        for f in message.fields:
            if f.type != FieldDescriptor.TYPE_MESSAGE or f.message_type is None:
                continue
            if f.message_type.full_name == "google.protobuf.Duration":
                ok = f.name.endswith(("_offset", "_duration")) or f.name in allowed
                assert ok, f"{message.name}.{f.name}"


def test_stream_round_trip() -> None:
    req = pb.StreamAudioRequest(audio=pb.AudioChunk(data=b"\x00\x01", sequence=7))
    again = pb.StreamAudioRequest.FromString(req.SerializeToString())
    assert again.WhichOneof("request") == "audio"
    assert again.audio.HasField("sequence")
    resp = pb.StreamAudioResponse(utterance_id=1, final_result=pb.FinalResult())
    resp.final_result.end_reason = pb.END_REASON_CLIENT_END
    assert resp.WhichOneof("event") == "final_result"


def test_every_element_is_documented(tmp_path: Path) -> None:
    """grpcurl `describe` shows leading comments: every service, method, message, field,
    oneof, enum and enum value must have one."""
    grpc_tools_protoc = pytest.importorskip("grpc_tools.protoc")
    out = tmp_path / "api.binpb"
    rc = grpc_tools_protoc.main(
        [
            "protoc",
            f"-I{_ROOT / 'proto'}",
            f"-I{resources.files('grpc_tools') / '_proto'}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            "whisperwire/v1/transcription_service.proto",
        ]
    )
    assert rc == 0
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (file,) = fds.file
    documented = {
        tuple(loc.path) for loc in file.source_code_info.location if loc.leading_comments.strip()
    }
    # Field numbers of FileDescriptorProto / DescriptorProto / EnumDescriptorProto /
    # ServiceDescriptorProto in descriptor.proto.
    missing: list[str] = []
    for i, msg in enumerate(file.message_type):
        if (4, i) not in documented:
            missing.append(msg.name)
        missing += [
            f"{msg.name}.{f.name}"
            for j, f in enumerate(msg.field)
            if (4, i, 2, j) not in documented
        ]
        missing += [
            f"{msg.name}.{o.name}"
            for k, o in enumerate(msg.oneof_decl)
            if not o.name.startswith("_") and (4, i, 8, k) not in documented
        ]
    for i, enum in enumerate(file.enum_type):
        if (5, i) not in documented:
            missing.append(enum.name)
        missing += [v.name for j, v in enumerate(enum.value) if (5, i, 2, j) not in documented]
    for i, svc in enumerate(file.service):
        if (6, i) not in documented:
            missing.append(svc.name)
        missing += [
            f"{svc.name}.{m.name}"
            for j, m in enumerate(svc.method)
            if (6, i, 2, j) not in documented
        ]
    assert missing == []
