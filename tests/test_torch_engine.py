"""The PyTorch engine on real tiny.en and base weights (CPU, float32; CUDA where present).

Its forward pass and greedy decoding are checked against OpenAI's own reference code
(`whisper.model`, `whisper.decoding`) on the same weights; transcripts against the
CTranslate2 engine and the clips' references; the gRPC server's main paths run on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.grpc_helpers import (
    END,
    audio_requests,
    collect,
    config_request,
    finals,
    paced,
    serving,
    stub,
)
from tests.speech import (
    CHINESE,
    ENGLISH_CLIPS,
    HESTER,
    JFK,
    NIGHTFALL,
    corpus_wer,
    load_pcm16k,
    silence,
    to_s16le,
    to_wav_bytes,
    wer,
    white_noise,
)
from whisperwire.server.domain import DecodeOptions
from whisperwire.server.engine import GenerationParams
from whisperwire.server.engines.torch import TorchEngine, load_torch_engine
from whisperwire.server.engines.torch_whisper.checkpoints import load_checkpoint
from whisperwire.server.errors import ConfigurationError, ModelNotFoundError
from whisperwire.server.features import window_features
from whisperwire.server.pipeline import SpeechPipeline
from whisperwire.server.runner import DirectRunner
from whisperwire.server.tokenizer import WhisperTokenizer
from whisperwire.v1 import transcription_service_pb2 as pb

whisper = pytest.importorskip("whisper")  # openai-whisper, the numerical reference

TorchModel = tuple[TorchEngine, WhisperTokenizer]


@pytest.fixture(scope="module")
def tiny_torch(tiny_en_dir: Path) -> TorchModel:
    torch.set_num_threads(2)
    engine, tokenizer = load_torch_engine(
        str(tiny_en_dir), device="cpu", dtype=None, max_batch_size=8
    )
    return engine, tokenizer


@pytest.fixture(scope="module")
def base_torch(base_model_dir: Path) -> TorchModel:
    engine, tokenizer = load_torch_engine(
        str(base_model_dir), device="cpu", dtype=None, max_batch_size=8
    )
    return engine, tokenizer


def pipeline(model: TorchModel) -> SpeechPipeline:
    engine, tokenizer = model
    return SpeechPipeline(tokenizer, engine.info, DirectRunner(engine))


def reference_model(checkpoint: Path) -> torch.nn.Module:
    dims, state = load_checkpoint(checkpoint)
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**dataclasses.asdict(dims)))
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


def mel_of(clip: object) -> np.ndarray:
    return window_features(load_pcm16k(clip), 80)  # type: ignore[arg-type]


# ---- numerics against OpenAI's reference ---------------------------------------------------


def test_forward_matches_openai_reference(tiny_en_dir: Path, tiny_torch: TorchModel) -> None:
    engine, tokenizer = tiny_torch
    reference = reference_model(tiny_en_dir)
    mel = torch.from_numpy(mel_of(JFK))[None]
    with torch.inference_mode():
        expected_audio = reference.embed_audio(mel)
        ours = engine._decoder.encode(mel)
        torch.testing.assert_close(ours, expected_audio, atol=2e-3, rtol=1e-3)
        prompt = torch.tensor([[tokenizer.sot, tokenizer.no_timestamps]])
        expected_logits = reference.logits(prompt, expected_audio)[0, -1]
        engine._decoder.cache.fill_cross(engine._decoder.model, ours, slice(0, 1))
        hidden = engine._decoder._prefill([prompt[0].tolist()])
        got = (hidden[0, -1] @ engine._decoder.model.decoder.token_embedding.weight.T).float()
    torch.testing.assert_close(got, expected_logits, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("timestamps", [False, True], ids=["text", "timestamps"])
def test_greedy_tokens_match_openai_decoding(
    tiny_en_dir: Path, tiny_torch: TorchModel, timestamps: bool
) -> None:
    """OpenAI's greedy decoder (its suppress, blank and timestamp rules) on the same windows."""
    engine, tokenizer = tiny_torch
    reference = reference_model(tiny_en_dir)
    clips = [JFK, NIGHTFALL, HESTER]
    mels = [mel_of(c) for c in clips]
    options = whisper.DecodingOptions(language="en", without_timestamps=not timestamps, fp16=False)
    expected = whisper.decode(reference, torch.from_numpy(np.stack(mels)), options)
    prompt = tokenizer.prompt(language="en", task=DecodeOptions().task, timestamps=timestamps)
    params = GenerationParams(max_new_tokens=224, suppress_tokens=tokenizer.non_speech_tokens())
    got = engine.generate(mels, [prompt] * 3, params)
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.token_ids == theirs.tokens
        assert ours.no_speech_prob == pytest.approx(theirs.no_speech_prob, abs=1e-3)
        assert ours.cum_logprob is not None
        assert ours.cum_logprob / (len(ours.token_ids) + 1) == pytest.approx(
            theirs.avg_logprob, abs=1e-3
        )


def test_prompts_of_different_lengths_batch_like_one_at_a_time(tiny_torch: TorchModel) -> None:
    """Left padding: a batch mixing a long previous-text prompt with plain ones decodes each
    row exactly as it decodes alone."""
    engine, tokenizer = tiny_torch
    mels = [mel_of(c) for c in ENGLISH_CLIPS]
    plain = tokenizer.prompt(language="en", task=DecodeOptions().task, timestamps=True)
    primed = tokenizer.prompt(
        language="en",
        task=DecodeOptions().task,
        timestamps=False,
        previous_text_ids=tokenizer.encode(" Hester Prynne, the lamps, my fellow Americans."),
    )
    prompts = [primed, plain, primed]
    params = GenerationParams(max_new_tokens=224)
    together = engine.generate(mels, prompts, params)
    alone = [engine.generate([m], [p], params)[0] for m, p in zip(mels, prompts, strict=True)]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    for a, b in zip(together, alone, strict=True):
        assert a.cum_logprob == pytest.approx(b.cum_logprob, abs=1e-3)


# ---- transcripts ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny", "base"])
async def test_wer_within_one_point_of_ctranslate2(
    model: str,
    tiny_torch: TorchModel,
    base_torch: TorchModel,
    tiny_pipeline: SpeechPipeline,
    base_pipeline: SpeechPipeline,
) -> None:
    ours = pipeline(tiny_torch if model == "tiny" else base_torch)
    theirs = tiny_pipeline if model == "tiny" else base_pipeline
    options = DecodeOptions(language="en")
    pairs_ours, pairs_theirs = [], []
    for clip in ENGLISH_CLIPS:
        pairs_ours.append(
            (clip.reference, (await ours.transcribe_bytes(clip.read(), options)).text)
        )
        pairs_theirs.append(
            (clip.reference, (await theirs.transcribe_bytes(clip.read(), options)).text)
        )
    assert corpus_wer(pairs_ours) <= corpus_wer(pairs_theirs) + 0.01
    assert corpus_wer(pairs_ours) <= 0.08


async def test_language_identification(base_torch: TorchModel) -> None:
    base = pipeline(base_torch)
    chinese = await base.transcribe_bytes(CHINESE.read(), DecodeOptions())
    english = await base.transcribe_bytes(HESTER.read(), DecodeOptions())
    assert chinese.language == "zh"
    assert chinese.language_probability is not None and chinese.language_probability > 0.9
    assert english.language == "en"
    assert english.language_probability is not None and english.language_probability > 0.8
    assert wer(HESTER.reference, english.text) <= 0.15


async def test_segment_timestamps_cover_the_speech(tiny_torch: TorchModel) -> None:
    transcript = await pipeline(tiny_torch).transcribe_bytes(
        JFK.read(), DecodeOptions(language="en", timestamps=True)
    )
    starts = [s.start for s in transcript.segments]
    assert len(transcript.segments) >= 2
    assert starts == sorted(starts)
    assert all(s.start < s.end <= 11.01 for s in transcript.segments)
    assert wer(JFK.reference, transcript.text) <= 0.1


@pytest.mark.parametrize("audio", ["silence", "noise"])
async def test_silence_and_noise_give_empty_text(tiny_torch: TorchModel, audio: str) -> None:
    samples = silence(5.0) if audio == "silence" else white_noise(5.0)
    transcript = await pipeline(tiny_torch).transcribe_bytes(to_wav_bytes(samples), DecodeOptions())
    assert transcript.text == ""


async def test_beam_search_and_sampling(tiny_torch: TorchModel) -> None:
    tiny = pipeline(tiny_torch)
    beam = await tiny.transcribe_bytes(NIGHTFALL.read(), DecodeOptions(language="en", beam_size=5))
    assert wer(NIGHTFALL.reference, beam.text) <= 0.1
    torch.manual_seed(0)
    sampled = await tiny.transcribe_bytes(
        NIGHTFALL.read(), DecodeOptions(language="en", temperatures=(0.4,))
    )
    assert wer(NIGHTFALL.reference, sampled.text) <= 0.3


# ---- checkpoints ---------------------------------------------------------------------------


def test_openai_checkpoint_file_decodes_like_the_ctranslate2_directory(
    tmp_path: Path, tiny_en_dir: Path, tiny_torch: TorchModel, whisper_assets_dir: Path
) -> None:
    dims, state = load_checkpoint(tiny_en_dir)
    checkpoint = tmp_path / "tiny.en.pt"
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": state}, checkpoint)
    (tmp_path / "gpt2.tiktoken").write_bytes((whisper_assets_dir / "gpt2.tiktoken").read_bytes())
    engine, tokenizer = load_torch_engine(
        str(checkpoint), device="cpu", dtype=None, max_batch_size=2
    )
    assert engine.info.model == "tiny.en"
    prompt = tokenizer.prompt(language="en", task=DecodeOptions().task, timestamps=False)
    params = GenerationParams(max_new_tokens=224)
    [from_file] = engine.generate([mel_of(HESTER)], [prompt], params)
    [from_dir] = tiny_torch[0].generate([mel_of(HESTER)], [prompt], params)
    assert from_file.token_ids == from_dir.token_ids


def test_missing_and_malformed_checkpoints_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "large-v3.pt"
    with pytest.raises(ModelNotFoundError, match=r"large-v3\.pt"):
        load_torch_engine(str(missing), device="cpu", dtype=None, max_batch_size=1)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(ModelNotFoundError, match=r"garbage\.pt"):
        load_torch_engine(str(garbage), device="cpu", dtype=None, max_batch_size=1)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ModelNotFoundError, match=r"foreign\.pt"):
        load_torch_engine(str(tmp_path / "foreign.pt"), device="cpu", dtype=None, max_batch_size=1)
    broken_dir = tmp_path / "ct2"
    broken_dir.mkdir()
    (broken_dir / "model.bin").write_bytes(b"\x06\x00\x00\x00truncated")
    (broken_dir / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match=r"model\.bin"):
        load_checkpoint(broken_dir)


def test_cpu_runs_float32_only(tiny_en_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="float32"):
        load_torch_engine(str(tiny_en_dir), device="cpu", dtype="float16", max_batch_size=1)


# ---- the gRPC server on the torch engine ---------------------------------------------------


async def test_grpc_unary_stream_and_long_audio(tiny_torch: TorchModel) -> None:
    engine, tokenizer = tiny_torch
    async with serving(engine, tokenizer) as (_, channel):
        info = await stub(channel).GetServiceInfo(pb.GetServiceInfoRequest())
        assert info.engine == "torch"
        unary = await stub(channel).Transcribe(
            pb.TranscribeRequest(audio_content=JFK.read(), config=pb.RecognitionConfig())
        )
        assert wer(JFK.reference, unary.transcript.text) <= 0.1

        async def talk(clip: object) -> str:
            pcm = to_s16le(load_pcm16k(clip))  # type: ignore[arg-type]
            requests = [config_request(language="en"), *audio_requests(pcm, 3200), END]
            [final] = finals(await collect(stub(channel).StreamAudio(paced(requests))))
            return final.final_result.transcript.text

        texts = await asyncio.gather(*(talk(c) for c in ENGLISH_CLIPS))
        for clip, text in zip(ENGLISH_CLIPS, texts, strict=True):
            assert wer(clip.reference, text) <= 0.1, (clip.name, text)

        gap = silence(2.0)
        long_audio = np.concatenate(
            [x for c in (*ENGLISH_CLIPS, *ENGLISH_CLIPS) for x in (load_pcm16k(c), gap)]
        )
        assert len(long_audio) > 40 * 16000
        long = await stub(channel).Transcribe(
            pb.TranscribeRequest(
                audio_content=to_wav_bytes(long_audio), config=pb.RecognitionConfig()
            )
        )
        reference = " ".join(c.reference for c in (*ENGLISH_CLIPS, *ENGLISH_CLIPS))
        assert wer(reference, long.transcript.text) <= 0.1


# ---- CUDA only -----------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_graphs_decode_like_the_cpu_reference(
    tiny_en_dir: Path, tiny_torch: TorchModel, dtype: str
) -> None:
    tokenizer = tiny_torch[1]
    gpu = TorchEngine(tiny_en_dir, tokenizer, model_name="tiny.en", device="cuda", dtype=dtype)
    mels = [mel_of(c) for c in ENGLISH_CLIPS]
    prompt = tokenizer.prompt(language="en", task=DecodeOptions().task, timestamps=True)
    params = GenerationParams(max_new_tokens=224, suppress_tokens=tokenizer.non_speech_tokens())
    on_gpu = gpu.generate(mels, [prompt] * 3, params)
    on_cpu = tiny_torch[0].generate(mels, [prompt] * 3, params)
    for clip, a, b in zip(ENGLISH_CLIPS, on_gpu, on_cpu, strict=True):
        assert (
            wer(clip.reference, tokenizer.decode(a.token_ids))
            <= wer(clip.reference, tokenizer.decode(b.token_ids)) + 0.05
        )
