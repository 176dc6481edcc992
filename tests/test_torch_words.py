"""Word timestamps on the PyTorch engine (CPU, float32, real tiny.en weights).

Its alignment is checked against OpenAI's own (`whisper.timing.find_alignment`) on the same
weights and alignment heads, its word times against openai-whisper's
`transcribe(word_timestamps=True)` and the CTranslate2 engine's on the same clips, and words
travel through the real gRPC server on it.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.grpc_helpers import END, audio_requests, collect, config_request, finals, serving, stub
from tests.reports import Publish
from tests.speech import ENGLISH_CLIPS, HESTER, JFK, NIGHTFALL, load_pcm16k, normalise, to_s16le
from tests.word_timing import (
    TimedWord,
    assert_close_in_time,
    assert_words_inside_segments_in_order,
    delta_figures,
    matched_words,
    timed_words,
)
from whisperwire.server.domain import DecodeOptions, Transcript
from whisperwire.server.engine import Alignment, GenerationParams
from whisperwire.server.engines.torch import TorchEngine, load_torch_engine
from whisperwire.server.engines.torch_whisper.alignment import dtw_path
from whisperwire.server.engines.torch_whisper.checkpoints import (
    load_alignment_heads,
    load_checkpoint,
)
from whisperwire.server.engines.torch_whisper.model import ModelDimensions
from whisperwire.server.errors import ModelNotFoundError
from whisperwire.server.features import window_features
from whisperwire.server.pipeline import SpeechPipeline
from whisperwire.server.runner import DirectRunner
from whisperwire.server.tokenizer import WhisperTokenizer
from whisperwire.v1 import transcription_service_pb2 as pb

whisper = pytest.importorskip("whisper")  # openai-whisper, the reference

WORDS = DecodeOptions(language="en", timestamps=True, word_timestamps=True)
TorchModel = tuple[TorchEngine, WhisperTokenizer]


@pytest.fixture(scope="module")
def tiny_torch(tiny_en_dir: Path) -> TorchModel:
    torch.set_num_threads(2)
    return load_torch_engine(str(tiny_en_dir), device="cpu", dtype=None, max_batch_size=8)


@pytest.fixture(scope="module")
def reference(tiny_en_dir: Path) -> torch.nn.Module:
    """OpenAI's model on the same weights, told the same alignment heads."""
    dims, state = load_checkpoint(tiny_en_dir)
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**dataclasses.asdict(dims)))
    model.load_state_dict({k: v.float() for k, v in state.items()})
    mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
    for layer, head in load_alignment_heads(tiny_en_dir, dims, state):
        mask[layer, head] = True
    model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model.eval()


@pytest.fixture(scope="module")
async def torch_transcripts(tiny_torch: TorchModel) -> list[Transcript]:
    """The English clips through the pipeline on the torch engine, with words."""
    engine, tokenizer = tiny_torch
    pipeline = SpeechPipeline(tokenizer, engine.info, DirectRunner(engine))
    return [await pipeline.transcribe_bytes(c.read(), WORDS) for c in ENGLISH_CLIPS]


def mel_of(clip: object) -> np.ndarray:
    return window_features(load_pcm16k(clip), 80)  # type: ignore[arg-type]


def frames_of(clip: object) -> int:
    return min(3000, len(load_pcm16k(clip)) // 160)  # type: ignore[arg-type]


def word_times(alignment: Alignment, token_counts: list[int]) -> list[tuple[float, float, float]]:
    """(start, end, probability) per word from an alignment, as whisper.timing derives them."""
    text = np.asarray(alignment.text_indices)
    jumps = np.diff(text, prepend=-1) > 0
    times = np.asarray(alignment.time_indices)[jumps] * 0.02
    bounds = np.cumsum([0, *token_counts])
    return [
        (float(times[a]), float(times[b]), float(np.mean(alignment.token_probs[a:b])))
        for a, b in itertools.pairwise(bounds)
    ]


# ---- the alignment against OpenAI's ------------------------------------------------------


def test_batched_alignment_matches_openai_find_alignment(
    tiny_torch: TorchModel, reference: torch.nn.Module
) -> None:
    """Three windows of different lengths aligned in one batch, each like OpenAI's
    find_alignment aligns it alone: the same frames, the same probabilities."""
    engine, tokenizer = tiny_torch
    clips = [JFK, NIGHTFALL, HESTER]
    mels = [mel_of(c) for c in clips]
    prompt = tokenizer.prompt(language="en", task=WORDS.task, timestamps=False)
    decoded = engine.generate(mels, [prompt] * 3, GenerationParams(max_new_tokens=224))
    texts = [[t for t in g.token_ids if t < tokenizer.eot] for g in decoded]
    start = tokenizer.sot_sequence("en", WORDS.task)
    frames = [frames_of(c) for c in clips]
    ours = engine.align(mels, [start] * 3, texts, frames)
    openai_tokenizer = whisper.tokenizer.get_tokenizer(False, language="en", task="transcribe")
    for mel, text, count, alignment in zip(mels, texts, frames, ours, strict=True):
        theirs = whisper.timing.find_alignment(
            reference, openai_tokenizer, text, torch.from_numpy(mel), count
        )
        assert alignment.text_indices[0] == 0 and alignment.text_indices[-1] == len(text)
        assert len(alignment.token_probs) == len(text)
        got = word_times(alignment, [len(w.tokens) for w in theirs])
        assert [t for s, e, _ in got for t in (s, e)] == pytest.approx(
            [float(t) for w in theirs for t in (w.start, w.end)]
        )
        assert [p for *_, p in got] == pytest.approx([w.probability for w in theirs], abs=1e-4)


def test_prompts_of_different_lengths_align_like_one_at_a_time(tiny_torch: TorchModel) -> None:
    engine, tokenizer = tiny_torch
    mels = [mel_of(JFK), mel_of(HESTER)]
    plain = tokenizer.sot_sequence("en", WORDS.task)
    primed = [tokenizer.sot_prev, *tokenizer.encode(" Hester Prynne, the lamps."), *plain]
    prompts = [primed, plain]
    texts = [tokenizer.encode(" And so my fellow Americans,"), tokenizer.encode(" Yet these")]
    frames = [1100, 700]
    together = engine.align(mels, prompts, texts, frames)
    for i, ours in enumerate(together):
        [alone] = engine.align([mels[i]], [prompts[i]], [texts[i]], [frames[i]])
        assert (ours.text_indices, ours.time_indices) == (alone.text_indices, alone.time_indices)
        assert ours.token_probs == pytest.approx(alone.token_probs, abs=1e-5)
        # The path ends on end-of-text at the window's last real frame.
        assert ours.text_indices[-1] == len(texts[i])
        assert ours.time_indices[-1] == frames[i] // 2 - 1


def test_dtw_path_matches_openai_dtw() -> None:
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (1, 5), (5, 1), (6, 40), (40, 6), (60, 700)]:
        cost = rng.normal(size=shape)
        rows, columns = whisper.timing.dtw_cpu(cost.copy())
        assert dtw_path(cost) == (rows.tolist(), columns.tolist()), shape


# ---- word times against openai-whisper and CTranslate2 -----------------------------------


def test_word_times_match_openai_whisper_transcribe(
    torch_transcripts: list[Transcript], reference: torch.nn.Module, publish: Publish
) -> None:
    pairs: list[tuple[TimedWord, TimedWord]] = []
    for clip, transcript in zip(ENGLISH_CLIPS, torch_transcripts, strict=True):
        assert_words_inside_segments_in_order(transcript)
        result = whisper.transcribe(
            reference, load_pcm16k(clip), language="en", word_timestamps=True, fp16=False
        )
        theirs = [(w["word"], w["start"], w["end"]) for s in result["segments"] for w in s["words"]]
        matched = matched_words(timed_words(transcript), theirs)
        assert len(matched) >= 0.9 * len(theirs), (transcript, theirs)
        pairs += matched
    figures = delta_figures(pairs)
    publish("torch_word_timestamps_vs_openai_whisper", figures)
    assert_close_in_time(figures)


async def test_word_times_match_the_ctranslate2_engine(
    torch_transcripts: list[Transcript], tiny_pipeline: SpeechPipeline, publish: Publish
) -> None:
    pairs: list[tuple[TimedWord, TimedWord]] = []
    for clip, transcript in zip(ENGLISH_CLIPS, torch_transcripts, strict=True):
        theirs = timed_words(await tiny_pipeline.transcribe_bytes(clip.read(), WORDS))
        matched = matched_words(timed_words(transcript), theirs)
        assert len(matched) >= 0.9 * len(theirs), (transcript, theirs)
        pairs += matched
    figures = delta_figures(pairs)
    publish("torch_word_timestamps_vs_ctranslate2", figures)
    assert_close_in_time(figures)


# ---- alignment heads -----------------------------------------------------------------------


def test_alignment_heads_from_config_checkpoint_mask_or_default(
    tmp_path: Path, tiny_en_dir: Path
) -> None:
    dims, state = load_checkpoint(tiny_en_dir)
    # The CTranslate2 directory's config.json lists them.
    assert load_alignment_heads(tiny_en_dir, dims, state) == (
        (1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4),
    )  # fmt: skip
    # An OpenAI checkpoint's buffer, stored sparse, survives the pickle-free load.
    mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
    mask[2, 1] = mask[3, 4] = True
    with_heads = save_checkpoint(tmp_path / "heads.pt", dims, {"alignment_heads": mask.to_sparse()})
    assert load_alignment_heads(with_heads, *load_checkpoint(with_heads)) == ((2, 1), (3, 4))
    # None named: every head of the decoder's second half, as Whisper does.
    bare = save_checkpoint(tmp_path / "bare.pt", dims, {})
    halves = load_alignment_heads(bare, *load_checkpoint(bare))
    assert halves == tuple((layer, head) for layer in (2, 3) for head in range(6))
    wrong = save_checkpoint(tmp_path / "wrong.pt", dims, {"alignment_heads": mask[:2]})
    with pytest.raises(ModelNotFoundError, match=r"wrong\.pt.*alignment_heads"):
        load_alignment_heads(wrong, *load_checkpoint(wrong))


def save_checkpoint(path: Path, dims: ModelDimensions, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": state}, path)
    return path


# ---- the gRPC server on the torch engine -------------------------------------------------


async def test_grpc_transcribe_and_stream_carry_words(
    tiny_torch: TorchModel, torch_transcripts: list[Transcript]
) -> None:
    engine, tokenizer = tiny_torch
    async with serving(engine, tokenizer) as (_, channel):
        info = await stub(channel).GetServiceInfo(pb.GetServiceInfoRequest())
        assert info.engine == "torch" and info.supports_word_timestamps
        response = await stub(channel).Transcribe(
            pb.TranscribeRequest(
                audio_content=JFK.read(),
                config=pb.RecognitionConfig(
                    language="en", enable_segment_timestamps=True, enable_word_timestamps=True
                ),
            )
        )
        got = [
            (w.text, w.start_offset.ToNanoseconds() / 1e9, w.end_offset.ToNanoseconds() / 1e9)
            for s in response.transcript.segments
            for w in s.words
        ]
        assert got == timed_words(torch_transcripts[0])
        assert all(0 < w.probability <= 1 for s in response.transcript.segments for w in s.words)

        pcm = to_s16le(load_pcm16k(JFK))
        requests = [
            config_request(language="en", enable_word_timestamps=True),
            *audio_requests(pcm, 32000),
            END,
        ]
        [final] = finals(await collect(stub(channel).StreamAudio(iter(requests))))
        segments = list(final.final_result.transcript.segments)
        assert segments and all(s.words for s in segments)
        words = [w for s in segments for w in s.words]
        assert normalise("".join(w.text for w in words)) == normalise(
            final.final_result.transcript.text
        )
        starts = [w.start_offset.ToNanoseconds() for w in words]
        assert starts == sorted(starts)


# ---- CUDA only -----------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_alignment_on_cuda_times_like_the_cpu(
    tiny_en_dir: Path, tiny_torch: TorchModel, dtype: str
) -> None:
    """The attention scores are float32 whatever the model runs in: token times stay within a
    frame of the CPU's float32 alignment."""
    cpu, tokenizer = tiny_torch
    gpu = TorchEngine(tiny_en_dir, tokenizer, model_name="tiny.en", device="cuda", dtype=dtype)
    mels = [mel_of(c) for c in ENGLISH_CLIPS]
    start = tokenizer.sot_sequence("en", WORDS.task)
    texts = [tokenizer.encode(" " + c.reference.capitalize()) for c in ENGLISH_CLIPS]
    frames = [frames_of(c) for c in ENGLISH_CLIPS]
    for a, b, text in zip(
        gpu.align(mels, [start] * 3, texts, frames),
        cpu.align(mels, [start] * 3, texts, frames),
        texts,
        strict=True,
    ):
        ours, theirs = word_times(a, [1] * len(text)), word_times(b, [1] * len(text))
        assert np.median([abs(x[0] - y[0]) for x, y in zip(ours, theirs, strict=True)]) <= 0.02
        assert a.token_probs == pytest.approx(b.token_probs, abs=0.05)
