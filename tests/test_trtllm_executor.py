"""The TensorRT-LLM adapter's step-level batching, through the strict double of the runner's
Executor (`runner.session`, docs/trtllm.md#executor).

(a) The double's executor refuses what the real one refuses and answers as it does: responses
once, by id, empty on a timeout, cancelled requests answered as cancelled, per-request errors.
(b) The adapter as an engine.StepBatcher: windows admitted at any step finish on their own,
cancellation frees the slot mid-decode, one failing request fails only its window, free_slots
respects the batch size and the executor's one beam width, and whole-batch calls share the
executor with windows in flight.
"""

from __future__ import annotations

import datetime
import importlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from tests.speech import JFK, load_pcm16k, wer
from tests.trtllm_double.support import TINY_EN, double_importable, write_engine_dir
from whisperwire.server.config import ServerSettings
from whisperwire.server.engine import (
    Generation,
    GenerationParams,
    WindowRequest,
    step_batcher,
)
from whisperwire.server.engines.trtllm import TrtLlmEngine
from whisperwire.server.engines.trtllm_loader import load_trtllm_engine
from whisperwire.server.errors import EngineError
from whisperwire.server.features import window_features
from whisperwire.server.tokenizer import WhisperTokenizer

# tiny.en's <|endoftext|>, <|startoftranscript|>, <|notimestamps|>.
EOT, SOT, NO_TIMESTAMPS = 50256, 50257, 50362
PROMPT = [SOT, NO_TIMESTAMPS]
MAX_WER = 0.08
SHORT = datetime.timedelta(milliseconds=1)
GREEDY = GenerationParams(max_new_tokens=60, return_no_speech_prob=False)


@pytest.fixture(scope="module")
def bindings() -> Iterator[ModuleType]:
    """The double's `tensorrt_llm.bindings.executor` (and runtime), importable meanwhile."""
    with double_importable():
        yield importlib.import_module("tensorrt_llm.bindings.executor")


@pytest.fixture(scope="module")
def engine_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_en_dir: Path, whisper_assets_dir: Path
) -> Path:
    root = tmp_path_factory.mktemp("engines")
    return write_engine_dir(root, TINY_EN, ct2_model_dir=tiny_en_dir, assets_dir=whisper_assets_dir)


@pytest.fixture(scope="module")
def jfk_features() -> Any:
    return window_features(load_pcm16k(JFK), 80)


# --- (a) the double's executor --------------------------------------------------------------


@pytest.fixture
def session(bindings: ModuleType, engine_dir: Path) -> Any:
    runtime = importlib.import_module("tensorrt_llm.runtime")
    runner = runtime.ModelRunnerCpp.from_dir(
        str(engine_dir), is_enc_dec=True, cross_kv_cache_fraction=0.5, max_batch_size=2
    )
    return runner.session


def request(bindings: ModuleType, features: Any, max_tokens: int = 40, **changes: Any) -> Any:
    mel = torch.from_numpy(features.T.copy()).half()
    kwargs: dict[str, Any] = {
        "sampling_config": bindings.SamplingConfig(1, top_k=1),
        "end_id": EOT,
        "pad_id": EOT,
        "encoder_input_features": mel,
        "encoder_output_length": mel.shape[0] // 2,
    }
    kwargs.update(changes)
    return bindings.Request(PROMPT, max_tokens, **kwargs)


def await_final(session: Any, request_id: int) -> Any:
    [response] = session.await_responses(request_id)
    return response


def test_responses_come_once_by_id_and_a_timeout_returns_nothing(
    bindings: ModuleType, session: Any, jfk_features: Any
) -> None:
    first, second = session.enqueue_requests([request(bindings, jfk_features)] * 2)
    assert session.await_responses(first, timeout=SHORT) == []  # mid-decode: nothing yet
    response = await_final(session, first)
    assert not response.has_error() and response.result.is_final
    assert response.result.finish_reasons == [bindings.FinishReason.END_ID]
    assert response.result.cum_log_probs is None  # only with return_log_probs
    # Read once: awaiting it again is an error response, not its answer twice.
    [again] = session.await_responses(first, timeout=SHORT)
    assert again.has_error() and "already been processed" in again.error_msg
    with pytest.raises(RuntimeError, match="response with an error"):
        _ = again.result
    [[answer]] = session.await_responses([second], timeout=SHORT)
    assert answer.request_id == second and answer.result.is_final
    assert session.await_responses(timeout=SHORT) == []
    with pytest.raises(bindings.ContractViolation, match="block forever"):
        session.await_responses(999)  # never enqueued: the real call never returns


def test_a_cancelled_request_ends_with_what_it_decoded(
    bindings: ModuleType, session: Any, jfk_features: Any
) -> None:
    request_id = session.enqueue_request(request(bindings, jfk_features))
    session.await_responses(request_id, timeout=SHORT)
    session.await_responses(request_id, timeout=SHORT)  # two tokens decoded
    session.cancel_request(request_id)
    response = await_final(session, request_id)
    assert response.result.finish_reasons == [bindings.FinishReason.CANCELLED]
    assert len(response.result.output_token_ids[0]) == len(PROMPT) + 2
    session.cancel_request(request_id)  # already terminated: ignored


def test_the_executor_queues_beyond_its_batch_and_one_beam_width(
    bindings: ModuleType, engine_dir: Path, jfk_features: Any
) -> None:
    runtime = importlib.import_module("tensorrt_llm.runtime")
    runner = runtime.ModelRunnerCpp.from_dir(
        str(engine_dir), is_enc_dec=True, cross_kv_cache_fraction=0.5, max_beam_width=2
    )
    session = runner.session
    greedy = [request(bindings, jfk_features) for _ in range(runner.max_batch_size + 1)]
    wide = request(bindings, jfk_features, sampling_config=bindings.SamplingConfig(2))
    ids = session.enqueue_requests([*greedy, wide])
    session.await_responses(timeout=SHORT)
    assert session.active_requests == runner.max_batch_size  # the rest wait in the queue
    for request_id in ids[:-1]:
        await_final(session, request_id)
    assert session.active_requests == 0  # the two-beam request waited for the greedy ones
    assert len(await_final(session, ids[-1]).result.output_token_ids) == 2


def test_a_refused_request_gets_an_error_response_alone(
    bindings: ModuleType, session: Any, jfk_features: Any
) -> None:
    too_long = request(bindings, jfk_features, max_tokens=447)  # prompt + 447 > max_seq_len
    bad, good = session.enqueue_requests([too_long, request(bindings, jfk_features)])
    refused = await_final(session, bad)
    assert refused.has_error() and "maximum sequence length" in refused.error_msg
    assert not await_final(session, good).has_error()


def test_the_double_refuses_contract_violations(
    bindings: ModuleType, session: Any, jfk_features: Any
) -> None:
    with pytest.raises(bindings.ContractViolation, match="Incompatible data types"):
        session.enqueue_request(
            request(bindings, jfk_features, encoder_input_features=torch.zeros(3000, 80))
        )
    with pytest.raises(bindings.ContractViolation, match="end_id"):
        session.enqueue_request(request(bindings, jfk_features, end_id=None))
    with pytest.raises(TypeError, match="unexpected keyword"):
        request(bindings, jfk_features, max_new_tokens=3)
    with pytest.raises(NotImplementedError, match="repetition_penalty"):
        bindings.SamplingConfig(1, repetition_penalty=1.2)
    with pytest.raises(TypeError, match="timedelta"):
        session.await_responses(timeout=0.01)
    session.shutdown()
    with pytest.raises(RuntimeError, match="Shutdown called"):
        session.await_responses(timeout=SHORT)


# --- (b) the adapter as a StepBatcher -------------------------------------------------------


@pytest.fixture
def engine(bindings: ModuleType, engine_dir: Path) -> TrtLlmEngine:
    loaded, _ = load_trtllm_engine(ServerSettings(engine="trtllm", engine_dir=engine_dir))
    return loaded


@pytest.fixture(scope="module")
def tokenizer(tiny_en_dir: Path) -> WhisperTokenizer:
    return WhisperTokenizer.from_dir(tiny_en_dir)


def window(ticket: int, features: Any, params: GenerationParams = GREEDY) -> WindowRequest:
    return WindowRequest(ticket=ticket, features=features, prompt=PROMPT, params=params)


def advance_until_done(
    engine: TrtLlmEngine, tickets: Sequence[int], limit: int = 200
) -> dict[int, Generation | EngineError]:
    finished: dict[int, Generation | EngineError] = {}
    for _ in range(limit):
        finished.update(engine.advance([], []))
        if set(tickets) <= set(finished):
            return finished
    raise AssertionError(f"{sorted(set(tickets) - set(finished))} never finished")


def session_of(engine: TrtLlmEngine) -> Any:
    return engine._runner.session  # type: ignore[union-attr]


def test_the_adapter_is_a_step_batcher(engine: TrtLlmEngine) -> None:
    assert step_batcher(engine) is engine


def test_windows_decode_step_level_as_the_whole_batch_call_does(
    engine: TrtLlmEngine, jfk_features: Any, tokenizer: WhisperTokenizer
) -> None:
    params = GenerationParams(max_new_tokens=60)  # with no_speech_prob: a probe per window
    [whole] = engine.generate([jfk_features], [PROMPT], params)
    assert (
        engine.advance([window(1, jfk_features, params), window(2, jfk_features, params)], []) == {}
    )
    assert engine.in_flight == 2
    finished = advance_until_done(engine, [1, 2])
    assert engine.in_flight == 0
    for generation in finished.values():
        assert isinstance(generation, Generation)
        assert generation.token_ids == whole.token_ids
        assert wer(JFK.reference, tokenizer.decode(generation.token_ids)) <= MAX_WER
        # One window alone vs two in a batch: float32 sums in another order.
        assert generation.no_speech_prob == pytest.approx(whole.no_speech_prob, abs=1e-6)
        assert generation.cum_logprob is not None and generation.cum_logprob < 0


def test_a_window_admitted_mid_decode_finishes_on_its_own(
    engine: TrtLlmEngine, jfk_features: Any
) -> None:
    engine.advance([window(1, jfk_features)], [])
    for _ in range(3):
        assert engine.advance([], []) == {}
    short = GenerationParams(max_new_tokens=2, return_no_speech_prob=False)
    finished = engine.advance([window(2, jfk_features, short)], [])
    finished.update(engine.advance([], []))
    assert list(finished) == [2] and engine.in_flight == 1  # the long one still decodes
    short_generation = finished[2]
    assert isinstance(short_generation, Generation) and len(short_generation.token_ids) == 2
    long_generation = advance_until_done(engine, [1])[1]
    assert isinstance(long_generation, Generation)
    assert long_generation.token_ids[:2] == short_generation.token_ids


def test_cancelling_a_window_frees_its_slot_mid_decode(
    engine: TrtLlmEngine, jfk_features: Any
) -> None:
    slots = engine.free_slots(GREEDY)
    assert slots == engine.info.max_batch_size
    engine.advance([window(t, jfk_features) for t in range(slots)], [])
    assert engine.free_slots(GREEDY) == 0
    assert session_of(engine).active_requests == slots
    finished = engine.advance([], [0])
    assert 0 not in finished and engine.in_flight == slots - 1
    assert session_of(engine).active_requests == slots - 1  # the executor stopped decoding it
    assert engine.free_slots(GREEDY) == 1
    finished.update(advance_until_done(engine, range(1, slots)))
    assert 0 not in finished and all(isinstance(g, Generation) for g in finished.values())
    engine.advance([], [1])  # a ticket already returned: nothing to cancel
    assert session_of(engine).get_num_responses_ready() == 0 and engine.free_slots(GREEDY) == slots


def test_one_failing_request_fails_only_its_window(engine: TrtLlmEngine, jfk_features: Any) -> None:
    runner = engine._runner
    session_of(engine).fail_next_request("Encoder input features are malformed")
    finished = engine.advance([window(t, jfk_features) for t in (1, 2, 3)], [])
    assert list(finished) == [1]  # refused at admission, answered at once
    finished.update(advance_until_done(engine, [2, 3]))
    failed = finished[1]
    assert isinstance(failed, EngineError) and "malformed" in str(failed)
    assert all(isinstance(finished[t], Generation) for t in (2, 3))
    assert engine._runner is runner  # an error response is no reason to rebuild


def test_a_failed_probe_fails_its_window_and_cancels_its_decode(
    engine: TrtLlmEngine, jfk_features: Any
) -> None:
    session_of(engine).fail_next_request("probe refused")
    params = GenerationParams(max_new_tokens=60)
    failed = engine.advance([window(1, jfk_features, params)], [])[1]
    assert isinstance(failed, EngineError) and "probe refused" in str(failed)
    assert session_of(engine).active_requests == 1  # its decode, cancelled just now
    engine.advance([], [])  # reads the decode's cancelled answer
    assert session_of(engine).active_requests == 0
    assert engine.free_slots(params) == engine.info.max_batch_size // 2


def test_free_slots_respect_the_batch_size_and_the_executors_beam_width(
    bindings: ModuleType, engine_dir: Path, jfk_features: Any
) -> None:
    settings = ServerSettings(
        engine="trtllm", engine_dir=engine_dir, max_batch_size=4, default_beam_size=2
    )
    engine, _ = load_trtllm_engine(settings)
    with_probe = GenerationParams(max_new_tokens=60)
    two_beams = GenerationParams(max_new_tokens=60, beam_size=2, return_no_speech_prob=False)
    assert engine.free_slots(GREEDY) == 4
    assert engine.free_slots(with_probe) == 2  # a probe and a decode per window
    assert not engine.steppable(GenerationParams(max_new_tokens=60, beam_size=2))
    assert engine.free_slots(GenerationParams(max_new_tokens=60, beam_size=2)) == 0
    engine.advance([window(1, jfk_features)], [])
    assert engine.free_slots(GREEDY) == 3
    assert engine.free_slots(two_beams) == 0  # one beam width at a time
    advance_until_done(engine, [1])
    assert engine.free_slots(two_beams) == 4


def test_whole_batch_calls_leave_step_windows_in_flight_alone(
    engine: TrtLlmEngine, jfk_features: Any, tokenizer: WhisperTokenizer
) -> None:
    engine.advance([window(1, jfk_features)], [])
    [generation] = engine.generate([jfk_features], [PROMPT], GenerationParams(max_new_tokens=60))
    assert wer(JFK.reference, tokenizer.decode(generation.token_ids)) <= MAX_WER
    assert engine.detect_language([jfk_features]) == [[("en", 1.0)]]
    assert engine.in_flight == 1
    stepped = advance_until_done(engine, [1])[1]
    assert isinstance(stepped, Generation) and stepped.token_ids == generation.token_ids


def test_an_executor_that_raises_is_rebuilt_and_its_windows_are_lost(
    engine: TrtLlmEngine, jfk_features: Any
) -> None:
    engine.advance([window(1, jfk_features)], [])
    failed = session_of(engine)
    failed.raise_on_next_call("CUDA error: an illegal memory access was encountered")
    with pytest.raises(EngineError, match="illegal memory access"):
        engine.advance([window(2, jfk_features)], [])
    assert engine.in_flight == 0 and failed.is_shut_down
    engine.advance([window(3, jfk_features)], [])
    assert isinstance(advance_until_done(engine, [3])[3], Generation)
