"""The TensorRT-LLM adapter, through a strict contract double of ModelRunnerCpp.

(a) The double rejects each contract violation of docs/trtllm.md (the section is in each case's
name) and behaves as the real runtime does where the adapter depends on it, so a call that
passes it means something. (b) The adapter behind the seam transcribes real speech as
accurately as the CPU engine, recovers from a failed call, and reads language and no-speech
probabilities as Whisper does. (c) Startup fails clearly on a bad installation or engine
directory.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from engine_builder.trtllm_build import BuildOptions
from tests.speech import CHINESE, ENGLISH_CLIPS, JFK, corpus_wer, load_pcm16k, wer
from tests.trtllm_double.support import BASE, TINY_EN, double_importable, write_engine_dir
from whisperwire.server.app import ConfigurationError
from whisperwire.server.config import ServerSettings
from whisperwire.server.domain import DecodeOptions, Task
from whisperwire.server.engine import GenerationParams
from whisperwire.server.engines.trtllm import TrtLlmEngine
from whisperwire.server.engines.trtllm_loader import load_trtllm_engine
from whisperwire.server.errors import EngineError, EngineLostError, ModelNotFoundError
from whisperwire.server.features import window_features
from whisperwire.server.pipeline import SpeechPipeline
from whisperwire.server.runner import DirectRunner
from whisperwire.server.tokenizer import WhisperTokenizer

# tiny.en's <|endoftext|>, <|startoftranscript|>, <|notimestamps|>.
EOT, SOT, NO_TIMESTAMPS = 50256, 50257, 50362
PROMPT = [SOT, NO_TIMESTAMPS]
MAX_WER = 0.08


@pytest.fixture(scope="module")
def runtime() -> Iterator[ModuleType]:
    """The double's `tensorrt_llm.runtime`, importable while this module's tests run."""
    with double_importable():
        yield importlib.import_module("tensorrt_llm.runtime")


@pytest.fixture(scope="module")
def engines_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="module")
def tiny_engine_dir(engines_root: Path, tiny_en_dir: Path, whisper_assets_dir: Path) -> Path:
    return write_engine_dir(
        engines_root, TINY_EN, ct2_model_dir=tiny_en_dir, assets_dir=whisper_assets_dir
    )


@pytest.fixture(scope="module")
def base_engine_dir(engines_root: Path, base_model_dir: Path, whisper_assets_dir: Path) -> Path:
    return write_engine_dir(
        engines_root, BASE, ct2_model_dir=base_model_dir, assets_dir=whisper_assets_dir
    )


def trtllm_settings(engine_dir: Path | None, **settings: Any) -> ServerSettings:
    return ServerSettings(engine="trtllm", engine_dir=engine_dir, **settings)


@pytest.fixture(scope="module")
def jfk_features() -> Any:
    return window_features(load_pcm16k(JFK), 80)


# --- (a) the double is strict ----------------------------------------------------------------

VALID_FROM_DIR: dict[str, Any] = {"is_enc_dec": True, "cross_kv_cache_fraction": 0.5}


@pytest.fixture(scope="module")
def runner(runtime: ModuleType, tiny_engine_dir: Path) -> Any:
    return runtime.ModelRunnerCpp.from_dir(str(tiny_engine_dir), **VALID_FROM_DIR)


@pytest.fixture(scope="module")
def jfk_mel(jfk_features: Any) -> torch.Tensor:
    """What the engine takes: [frames, n_mels] in the engine's dtype, float16 here."""
    return torch.from_numpy(jfk_features.T.copy()).half()


def generate_kwargs(mel: torch.Tensor, batch: int = 1, **changes: Any) -> dict[str, Any]:
    """A valid Whisper call with `changes` applied; a change to None drops the argument."""
    kwargs: dict[str, Any] = {
        "batch_input_ids": [torch.tensor(PROMPT, dtype=torch.int32)] * batch,
        "encoder_input_features": [mel] * batch,
        "encoder_output_lengths": [mel.shape[0] // 2] * batch,
        "max_new_tokens": 40,
        "end_id": EOT,
        "pad_id": EOT,
        "top_k": 1,
        "return_dict": True,
        "output_sequence_lengths": True,
        "output_cum_log_probs": True,
    }
    kwargs.update(changes)
    return {name: value for name, value in kwargs.items() if value is not None}


def test_a_valid_call_answers_in_tensorrt_llms_layout(
    runner: Any, jfk_mel: torch.Tensor, tiny_en_dir: Path
) -> None:
    """#outputs: output_ids int32 [batch, beams, max_seq_len] = prompt + generated, end_id-padded;
    sequence_lengths exclude end-of-text; greedy log_probs are normalised to 0."""
    out = runner.generate(**generate_kwargs(jfk_mel, batch=2, output_log_probs=True))
    assert out["output_ids"].dtype == torch.int32
    assert tuple(out["output_ids"].shape) == (2, 1, 448)
    assert tuple(out["sequence_lengths"].shape) == tuple(out["cum_log_probs"].shape) == (2, 1)
    length = int(out["sequence_lengths"][0, 0])
    row = out["output_ids"][0, 0].tolist()
    assert row[:2] == PROMPT
    assert row[length - 1] != EOT and set(row[length:]) == {EOT}
    text = WhisperTokenizer.from_dir(tiny_en_dir).decode(row[2:length])
    assert "ask not what your country can do for you" in text
    assert float(out["cum_log_probs"][0, 0]) < 0
    assert torch.count_nonzero(out["log_probs"]) == 0
    assert "generation_logits" not in out


def test_generation_logits_need_both_switches(
    runtime: ModuleType, runner: Any, tiny_engine_dir: Path, jfk_mel: torch.Tensor
) -> None:
    """#outputs: from_dir(gather_generation_logits) and generate(output_generation_logits)."""
    probe = generate_kwargs(
        jfk_mel, batch_input_ids=[torch.tensor([SOT], dtype=torch.int32)], max_new_tokens=1
    )
    with pytest.raises(runtime.ContractViolation, match="gather_generation_logits"):
        runner.generate(**probe, output_generation_logits=True)
    gathering = runtime.ModelRunnerCpp.from_dir(
        str(tiny_engine_dir), **VALID_FROM_DIR, gather_generation_logits=True
    )
    assert "generation_logits" not in gathering.generate(**probe)
    logits = gathering.generate(**probe, output_generation_logits=True)["generation_logits"]
    assert tuple(logits.shape) == (1, 1, 1, 51864)


def test_an_error_response_wedges_the_runner_until_drained_or_rebuilt(
    runtime: ModuleType, tiny_engine_dir: Path, jfk_mel: torch.Tensor
) -> None:
    """#errors: the failed batch's other responses stay queued; the next call would hang."""
    import datetime

    runner = runtime.ModelRunnerCpp.from_dir(str(tiny_engine_dir), **VALID_FROM_DIR)
    runner.fail_next_call("CUDA error: an illegal memory access")
    with pytest.raises(RuntimeError, match="illegal memory access"):
        runner.generate(**generate_kwargs(jfk_mel, batch=3))
    with pytest.raises(runtime.ContractViolation, match="2 stale responses"):
        runner.generate(**generate_kwargs(jfk_mel, max_new_tokens=2))
    assert len(runner.session.await_responses(timeout=datetime.timedelta(seconds=1))) == 2
    runner.generate(**generate_kwargs(jfk_mel, max_new_tokens=2))  # drained: usable again
    runner.session.shutdown()
    with pytest.raises(runtime.ContractViolation, match="cannot enqueue"):
        runner.generate(**generate_kwargs(jfk_mel, max_new_tokens=2))


def test_options_the_double_cannot_emulate_are_refused_not_ignored(
    runner: Any, jfk_mel: torch.Tensor
) -> None:
    with pytest.raises(NotImplementedError, match="repetition_penalty"):
        runner.generate(**generate_kwargs(jfk_mel, repetition_penalty=1.2))
    with pytest.raises(NotImplementedError, match="single tokens"):
        runner.generate(**generate_kwargs(jfk_mel, bad_words_list=[[[262, 1499]]]))


def test_bad_words_are_never_generated(
    runner: Any, jfk_mel: torch.Tensor, tiny_en_dir: Path
) -> None:
    """#generate: a one-token bad word is banned at every step (Whisper's suppress_tokens)."""
    tokenizer = WhisperTokenizer.from_dir(tiny_en_dir)
    [country] = tokenizer.encode(" country")
    plain = runner.generate(**generate_kwargs(jfk_mel))["output_ids"][0, 0].tolist()
    banned = runner.generate(**generate_kwargs(jfk_mel, bad_words_list=[[[country]]]))
    assert country in plain
    assert country not in banned["output_ids"][0, 0].tolist()


FROM_DIR_VIOLATIONS = [
    pytest.param({"cross_kv_cache_fraction": 0.5}, "is_enc_dec", id="#from-dir is_enc_dec missing"),
    pytest.param(
        {"is_enc_dec": True},
        "cross_kv_cache_fraction",
        id="#from-dir #2419 cross_kv_cache_fraction",
    ),
    pytest.param(
        {**VALID_FROM_DIR, "max_batch_size": 16}, "max_batch_size 16", id="#from-dir max_batch_size"
    ),
    pytest.param(
        {**VALID_FROM_DIR, "max_beam_width": 5}, "max_beam_width 5", id="#from-dir max_beam_width"
    ),
]


@pytest.mark.parametrize(("kwargs", "reason"), FROM_DIR_VIOLATIONS)
def test_from_dir_rejects(
    runtime: ModuleType, tiny_engine_dir: Path, kwargs: dict[str, Any], reason: str
) -> None:
    with pytest.raises(runtime.ContractViolation, match=reason):
        runtime.ModelRunnerCpp.from_dir(str(tiny_engine_dir), **kwargs)


def test_from_dir_takes_only_its_documented_keywords(
    runtime: ModuleType, tiny_engine_dir: Path
) -> None:
    """#from-dir: everything after engine_dir is keyword-only; no free_gpu_memory_fraction."""
    with pytest.raises(TypeError):
        runtime.ModelRunnerCpp.from_dir(str(tiny_engine_dir), True)
    with pytest.raises(TypeError):
        runtime.ModelRunnerCpp.from_dir(
            str(tiny_engine_dir), **VALID_FROM_DIR, free_gpu_memory_fraction=0.9
        )


def test_from_dir_needs_encoder_and_decoder_configs(
    runtime: ModuleType, tiny_engine_dir: Path, tmp_path: Path
) -> None:
    """#from-dir: is_enc_dec reads encoder/config.json and decoder/config.json."""
    import shutil

    broken = shutil.copytree(tiny_engine_dir, tmp_path / "engine")
    (broken / "decoder" / "config.json").unlink()
    with pytest.raises(runtime.ContractViolation, match=r"decoder/config\.json"):
        runtime.ModelRunnerCpp.from_dir(str(broken), **VALID_FROM_DIR)


def _long_prompt(length: int) -> list[torch.Tensor]:
    return [torch.tensor([SOT] * (length - 1) + [NO_TIMESTAMPS], dtype=torch.int32)]


def violation(make_kwargs: Callable[[torch.Tensor], dict[str, Any]], reason: str, rule: str) -> Any:
    return pytest.param(make_kwargs, reason, id=rule)


GENERATE_VIOLATIONS = [
    violation(
        lambda m: generate_kwargs(m, max_new_tokens=None),
        "max_new_tokens not passed",
        "#generate max_new_tokens omitted (defaults to 1)",
    ),
    violation(lambda m: generate_kwargs(m, end_id=None), "end_id", "#generate end_id omitted"),
    violation(lambda m: generate_kwargs(m, pad_id=None), "pad_id", "#generate pad_id omitted"),
    violation(
        lambda m: generate_kwargs(m.float()),
        "Incompatible data types",
        "#precision float32 features",
    ),
    violation(
        lambda m: generate_kwargs(m.T.contiguous()),
        r"got \[80, 3000\]",
        "#generate [n_mels, frames]",
    ),
    violation(
        lambda m: generate_kwargs(m.repeat(1, 2)[:, :128]),
        r"got \[3000, 128\]",
        "#engine-dir n_mels unlike the encoder's",
    ),
    violation(lambda m: generate_kwargs(m[:2999]), "must be even", "#engine-dir odd frame count"),
    violation(lambda m: generate_kwargs(m[:8]), "outside 10..3000", "#engine-dir under 10 frames"),
    violation(
        lambda m: generate_kwargs(torch.cat([m, m[:2]])),
        "outside 10..3000",
        "#engine-dir over 3000 frames",
    ),
    violation(
        lambda m: generate_kwargs(m, encoder_output_lengths=[3000]),
        "encoder_output_lengths",
        "#generate encoder_output_lengths not frames // 2",
    ),
    violation(
        lambda m: generate_kwargs(m, batch=9),
        "exceeds max_batch_size",
        "#engine-dir sherpa#606 batch",
    ),
    violation(
        lambda m: generate_kwargs(m, batch_input_ids=_long_prompt(229)),
        "max_input_len",
        "#engine-dir prompt above the decoder's max_input_len",
    ),
    violation(
        lambda m: generate_kwargs(m, max_new_tokens=447),
        "exceeds max_seq_len",
        "#engine-dir prompt + max_new_tokens above max_seq_len",
    ),
    violation(
        lambda m: generate_kwargs(m, num_beams=5),
        "max_beam_width",
        "#from-dir num_beams above engine",
    ),
    violation(
        lambda m: generate_kwargs(m, stopping_criteria=object()),
        "stopping_criteria",
        "#generate stopping_criteria unsupported",
    ),
]


@pytest.mark.parametrize(("make_kwargs", "reason"), GENERATE_VIOLATIONS)
def test_generate_rejects(
    runtime: ModuleType,
    runner: Any,
    jfk_mel: torch.Tensor,
    make_kwargs: Callable[[torch.Tensor], dict[str, Any]],
    reason: str,
) -> None:
    with pytest.raises(runtime.ContractViolation, match=reason):
        runner.generate(**make_kwargs(jfk_mel))


def test_generate_takes_only_its_documented_arguments(runner: Any, jfk_mel: torch.Tensor) -> None:
    """Only batch_input_ids is positional; unknown keywords fail (a typo is not ignored)."""
    kwargs = generate_kwargs(jfk_mel)
    ids, features = kwargs.pop("batch_input_ids"), kwargs.pop("encoder_input_features")
    with pytest.raises(TypeError):
        runner.generate(ids, features, **kwargs)
    with pytest.raises(TypeError, match="beam_width"):
        runner.generate(**generate_kwargs(jfk_mel, beam_width=2))


def test_concurrent_generate_is_refused(
    runtime: ModuleType, runner: Any, jfk_mel: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#serial: a second thread's call while one runs would steal responses."""
    errors: list[BaseException] = []
    ct2_model = runner._model

    def call_from_another_thread() -> None:
        try:
            runner.generate(**generate_kwargs(jfk_mel))
        except BaseException as error:
            errors.append(error)

    class ReenteringModel:
        def generate(self, *args: Any, **kwargs: Any) -> Any:
            other = threading.Thread(target=call_from_another_thread)
            other.start()
            other.join()
            return ct2_model.generate(*args, **kwargs)

    monkeypatch.setattr(runner, "_model", ReenteringModel())
    runner.generate(**generate_kwargs(jfk_mel, max_new_tokens=2))
    assert len(errors) == 1
    assert isinstance(errors[0], runtime.ContractViolation)
    assert "re-entered" in str(errors[0])


# --- (b) the adapter behind the seam ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_trtllm(
    runtime: ModuleType, tiny_engine_dir: Path
) -> tuple[TrtLlmEngine, WhisperTokenizer]:
    return load_trtllm_engine(trtllm_settings(tiny_engine_dir, max_batch_size=32))


@pytest.fixture(scope="module")
def base_trtllm(
    runtime: ModuleType, base_engine_dir: Path
) -> tuple[TrtLlmEngine, WhisperTokenizer]:
    return load_trtllm_engine(trtllm_settings(base_engine_dir))


def pipeline_of(loaded: tuple[TrtLlmEngine, WhisperTokenizer]) -> SpeechPipeline:
    engine, tokenizer = loaded
    return SpeechPipeline(tokenizer, engine.info, DirectRunner(engine))


def test_engine_info_comes_from_the_engine_configs(
    tiny_trtllm: tuple[TrtLlmEngine, WhisperTokenizer],
) -> None:
    engine, tokenizer = tiny_trtllm
    info = engine.info
    assert (info.name, info.model, info.n_mels, info.device) == ("trtllm", "tiny.en", 80, "cuda")
    assert not info.multilingual and not tokenizer.multilingual
    # #generate: no timestamp rules in TensorRT-LLM; 32 asked, the engine was built for 8.
    assert not info.supports_timestamps and not info.supports_word_timestamps
    assert info.max_batch_size == 8


async def test_tiny_en_transcribes_english_clips(
    tiny_trtllm: tuple[TrtLlmEngine, WhisperTokenizer],
) -> None:
    pipeline = pipeline_of(tiny_trtllm)
    pairs = []
    for clip in ENGLISH_CLIPS:
        transcript = await pipeline.transcribe(load_pcm16k(clip), DecodeOptions())
        pairs.append((clip.reference, transcript.text))
        assert transcript.language == "en"
        assert all(s.avg_logprob is not None for s in transcript.segments)
    assert corpus_wer(pairs) <= MAX_WER, pairs


async def test_base_transcribes_english_and_identifies_chinese(
    base_trtllm: tuple[TrtLlmEngine, WhisperTokenizer],
) -> None:
    pipeline = pipeline_of(base_trtllm)
    pairs = []
    for clip in ENGLISH_CLIPS:
        transcript = await pipeline.transcribe(load_pcm16k(clip), DecodeOptions())
        pairs.append((clip.reference, transcript.text))
        assert transcript.language == "en"
    assert corpus_wer(pairs) <= MAX_WER, pairs
    chinese = await pipeline.transcribe(load_pcm16k(CHINESE), DecodeOptions())
    assert chinese.language == "zh"
    assert chinese.language_probability is not None and chinese.language_probability > 0.5


def test_detect_language_batches(
    base_trtllm: tuple[TrtLlmEngine, WhisperTokenizer], jfk_features: Any
) -> None:
    engine, _ = base_trtllm
    chinese = window_features(load_pcm16k(CHINESE), 80)
    ranked = engine.detect_language([jfk_features, chinese])
    assert [r[0][0] for r in ranked] == ["en", "zh"]
    assert all(0 < r[0][1] <= 1 for r in ranked)


@pytest.mark.parametrize(
    "params",
    [
        # Above the engine's max_seq_len (448 - prompt): clipped, not refused.
        GenerationParams(max_new_tokens=1000),
        # Above the engine's max_beam_width of 4: the widest allowed beam is used.
        GenerationParams(max_new_tokens=100, beam_size=5),
    ],
    ids=["max_new_tokens clipped", "beam_size clipped"],
)
def test_generation_params_are_fitted_to_the_engine(
    tiny_trtllm: tuple[TrtLlmEngine, WhisperTokenizer],
    jfk_features: Any,
    params: GenerationParams,
) -> None:
    engine, tokenizer = tiny_trtllm
    [generation] = engine.generate([jfk_features], [PROMPT], params)
    assert wer(JFK.reference, tokenizer.decode(generation.token_ids)) <= MAX_WER
    assert EOT not in generation.token_ids
    assert generation.no_speech_prob is not None and generation.no_speech_prob < 0.5
    assert generation.cum_logprob is not None and generation.cum_logprob < 0


def test_sampling_reaches_the_engine(
    tiny_trtllm: tuple[TrtLlmEngine, WhisperTokenizer], jfk_features: Any
) -> None:
    engine, tokenizer = tiny_trtllm
    params = GenerationParams(max_new_tokens=60, temperature=0.4)
    generations = engine.generate([jfk_features] * 2, [PROMPT] * 2, params)
    for generation in generations:
        assert generation.token_ids and max(generation.token_ids) < tokenizer.eot


def runner_of(engine: TrtLlmEngine) -> Any:
    """The double behind the adapter (its test hooks and limits)."""
    return engine._runner


def test_a_failed_call_rebuilds_the_runner(
    tiny_engine_dir: Path, runtime: ModuleType, jfk_features: Any
) -> None:
    """#errors: after an executor call raises, its runner is shut down and a fresh one serves."""
    engine, tokenizer = load_trtllm_engine(trtllm_settings(tiny_engine_dir))
    wedged = runner_of(engine)
    wedged.session.raise_on_next_call("Encoder output shape mismatch")
    params = GenerationParams(max_new_tokens=40)
    with pytest.raises(EngineError, match="shape mismatch"):
        engine.generate([jfk_features] * 2, [PROMPT] * 2, params)
    assert wedged.session.is_shut_down and runner_of(engine) is not wedged
    [generation] = engine.generate([jfk_features], [PROMPT], params)
    assert wer(JFK.reference, tokenizer.decode(generation.token_ids)) <= MAX_WER


def test_an_error_response_fails_the_batch_and_keeps_the_runner(
    tiny_trtllm: tuple[TrtLlmEngine, WhisperTokenizer], jfk_features: Any
) -> None:
    """#errors: the executor answers a refused request with an error and serves on."""
    engine, _ = tiny_trtllm
    runner = runner_of(engine)
    runner.session.fail_next_request("Encoder input features are malformed")
    params = GenerationParams(max_new_tokens=40)
    with pytest.raises(EngineError, match="malformed"):
        engine.generate([jfk_features] * 2, [PROMPT] * 2, params)
    assert runner_of(engine) is runner and runner.session.idle
    assert engine.generate([jfk_features], [PROMPT], params)[0].token_ids


def test_a_runner_that_cannot_be_rebuilt_loses_the_engine(
    tiny_engine_dir: Path, runtime: ModuleType, jfk_features: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = load_trtllm_engine(trtllm_settings(tiny_engine_dir))
    runner_of(engine).session.raise_on_next_call("device lost")

    def no_gpu_left() -> Any:
        raise RuntimeError("CUDA error: no CUDA-capable device is detected")

    monkeypatch.setattr(engine, "_make_runner", no_gpu_left)
    params = GenerationParams(max_new_tokens=10)
    with pytest.raises(EngineError, match="device lost"):
        engine.generate([jfk_features], [PROMPT], params)
    with pytest.raises(EngineLostError) as lost:
        engine.generate([jfk_features], [PROMPT], params)
    assert lost.value.reason == "ENGINE_LOST"


def test_language_probabilities_are_a_softmax_over_language_tokens(
    base_trtllm: tuple[TrtLlmEngine, WhisperTokenizer], jfk_features: Any
) -> None:
    """#probe: real probabilities over the languages, not the normalised greedy log-prob 0."""
    engine, tokenizer = base_trtllm
    [ranked] = engine.detect_language([jfk_features])
    codes = [code for code, _ in ranked]
    assert codes[0] == "en" and sorted(codes) == sorted(tokenizer.languages)
    assert 0.5 < ranked[0][1] < 1.0
    assert sum(p for _, p in ranked) == pytest.approx(1.0, abs=1e-3)


def test_no_speech_probability_matches_the_cpu_engine(
    base_trtllm: tuple[TrtLlmEngine, WhisperTokenizer],
    base_engine: tuple[Any, WhisperTokenizer],
    jfk_features: Any,
) -> None:
    """#probe: silence is recognised as the CPU engine recognises it."""
    silence = window_features(np.zeros(16000 * 5, dtype=np.float32), 80)
    prompt = base_trtllm[1].prompt(language="en", task=Task.TRANSCRIBE, timestamps=False)
    params = GenerationParams(max_new_tokens=40)
    gpu = base_trtllm[0].generate([silence, jfk_features], [prompt] * 2, params)
    cpu = base_engine[0].generate([silence, jfk_features], [prompt] * 2, params)
    for mine, reference in zip(gpu, cpu, strict=True):
        assert mine.no_speech_prob == pytest.approx(reference.no_speech_prob, abs=0.05)
    silent, speech = (g.no_speech_prob or 0.0 for g in gpu)
    assert silent > 0.5 > speech


def test_features_go_in_the_encoder_engines_dtype(
    runtime: ModuleType,
    engines_root: Path,
    tiny_en_dir: Path,
    whisper_assets_dir: Path,
    jfk_features: Any,
) -> None:
    """#precision: a bfloat16 engine refuses float16 features and gets bfloat16 ones."""
    engine_dir = write_engine_dir(
        engines_root / "bf16",
        TINY_EN,
        ct2_model_dir=tiny_en_dir,
        assets_dir=whisper_assets_dir,
        dtype="bfloat16",
    )
    runner = runtime.ModelRunnerCpp.from_dir(str(engine_dir), **VALID_FROM_DIR)
    half = torch.from_numpy(jfk_features.T.copy()).half()
    with pytest.raises(runtime.ContractViolation, match="Incompatible data types"):
        runner.generate(**generate_kwargs(half))
    engine, tokenizer = load_trtllm_engine(trtllm_settings(engine_dir))
    [generation] = engine.generate([jfk_features], [PROMPT], GenerationParams(max_new_tokens=40))
    assert wer(JFK.reference, tokenizer.decode(generation.token_ids)) <= MAX_WER


def test_the_runner_is_sized_for_the_servers_beam_width(
    runtime: ModuleType, tiny_engine_dir: Path
) -> None:
    """#from-dir: the KV cache is sized for the beams the server decodes with, not the engine's."""
    engine, _ = load_trtllm_engine(trtllm_settings(tiny_engine_dir, default_beam_size=2))
    assert runner_of(engine).max_beam_width == 2
    narrow, _ = load_trtllm_engine(trtllm_settings(tiny_engine_dir))
    assert runner_of(narrow).max_beam_width == 1


async def test_a_long_initial_prompt_is_trimmed_to_the_engines_max_input_len(
    runtime: ModuleType, engines_root: Path, tiny_en_dir: Path, whisper_assets_dir: Path
) -> None:
    """#engine-dir: the decoder's max_input_len caps the prompt; older context is dropped."""
    small = write_engine_dir(
        engines_root / "small",
        TINY_EN,
        ct2_model_dir=tiny_en_dir,
        assets_dir=whisper_assets_dir,
        options=BuildOptions(max_input_len=12),
    )
    pipeline = pipeline_of(load_trtllm_engine(trtllm_settings(small)))
    prompt = "Remarks of President John F. Kennedy at his inauguration in Washington, 1961."
    transcript = await pipeline.transcribe(load_pcm16k(JFK), DecodeOptions(initial_prompt=prompt))
    assert wer(JFK.reference, transcript.text) <= MAX_WER


# --- (c) startup errors ----------------------------------------------------------------------


def test_engine_dir_is_required(runtime: ModuleType) -> None:
    with pytest.raises(ConfigurationError, match="--engine-dir"):
        load_trtllm_engine(trtllm_settings(None))


def test_a_missing_engine_dir_is_a_startup_error(runtime: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_trtllm_engine(trtllm_settings(tmp_path / "nowhere"))


def test_an_incomplete_engine_dir_is_a_startup_error(
    runtime: ModuleType, tmp_path: Path, tiny_en_dir: Path, whisper_assets_dir: Path
) -> None:
    engine_dir = write_engine_dir(
        tmp_path, TINY_EN, ct2_model_dir=tiny_en_dir, assets_dir=whisper_assets_dir
    )
    (engine_dir / "encoder" / "rank0.engine").unlink()
    with pytest.raises(ModelNotFoundError, match="incomplete"):
        load_trtllm_engine(trtllm_settings(engine_dir))


def test_engines_built_with_another_tensorrt_llm_are_refused(
    runtime: ModuleType, tmp_path: Path, tiny_en_dir: Path, whisper_assets_dir: Path
) -> None:
    engine_dir = write_engine_dir(
        tmp_path,
        TINY_EN,
        ct2_model_dir=tiny_en_dir,
        assets_dir=whisper_assets_dir,
        trtllm_version="1.1.0",
    )
    with pytest.raises(ModelNotFoundError, match=r"TensorRT-LLM 1\.1\.0 but 1\.2\.1 is running"):
        load_trtllm_engine(trtllm_settings(engine_dir))


def _pretend_gpu(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


def test_engines_built_on_another_gpu_are_refused(
    runtime: ModuleType,
    tiny_engine_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _pretend_gpu(monkeypatch, "NVIDIA L4")
    with pytest.raises(ModelNotFoundError, match="built on 'NVIDIA A10G' but this is 'NVIDIA L4'"):
        load_trtllm_engine(trtllm_settings(tiny_engine_dir))


def test_engines_built_on_this_gpu_load(
    runtime: ModuleType, tiny_engine_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pretend_gpu(monkeypatch, "NVIDIA A10G")
    engine, _ = load_trtllm_engine(trtllm_settings(tiny_engine_dir))
    assert engine.info.name == "trtllm"


def test_an_unknown_gpu_skips_the_gpu_check_and_says_so(
    runtime: ModuleType, tiny_engine_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert not torch.cuda.is_available()  # this test machine has no GPU
    with caplog.at_level(logging.WARNING, logger="whisperwire.server.engines.trtllm_loader"):
        engine, _ = load_trtllm_engine(trtllm_settings(tiny_engine_dir))
    assert engine.info.model == "tiny.en"
    assert "cannot determine the GPU" in caplog.text


def test_without_tensorrt_llm_startup_says_how_to_install_it(
    tiny_engine_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # makes the import fail
    with pytest.raises(ConfigurationError) as raised:
        load_trtllm_engine(trtllm_settings(tiny_engine_dir))
    assert "torch==2.9.1 torchvision --index-url https://download.pytorch.org/whl/cu130" in str(
        raised.value
    )
    assert "tensorrt-llm==1.2.1 --extra-index-url https://pypi.nvidia.com" in str(raised.value)


def test_a_torch_built_for_cuda_12_is_refused_with_the_recipe(
    runtime: ModuleType, tiny_engine_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#install: PyPI's torch is a CUDA 12 build; TensorRT-LLM 1.2.1 needs CUDA 13."""
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    with pytest.raises(ConfigurationError, match=r"built for CUDA 12\.8") as raised:
        load_trtllm_engine(trtllm_settings(tiny_engine_dir))
    assert "whl/cu130" in str(raised.value) and "pip check" in str(raised.value)
