"""Accuracy of the torch engine on a GPU against the CTranslate2 engine, same weights, same clips.

Both run through the speech pipeline as the server runs them (VAD windows, prompts, fallback).
Used by benchmarks.gpu_engine's `wer` section.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.speech import CHINESE, ENGLISH_CLIPS, corpus_wer, load_pcm16k, silence, to_wav_bytes, wer
from whisperwire.server.domain import DecodeOptions
from whisperwire.server.engine import Engine
from whisperwire.server.pipeline import SpeechPipeline
from whisperwire.server.runner import DirectRunner
from whisperwire.server.tokenizer import WhisperTokenizer

LONG_FORM_REPEATS = 4  # English clips x4 with 2 s gaps: about 100 s


def engines(name: str, directory: Path, tokenizer: WhisperTokenizer) -> dict[str, Engine | str]:
    """The torch engine on CUDA (with and without CUDA graphs) where there is a GPU, and the
    CTranslate2 engine on the CPU where ctranslate2 is installed."""
    import torch

    from whisperwire.server.engines.torch import TorchEngine

    found: dict[str, Engine | str] = {}
    if torch.cuda.is_available():
        for graphs in (True, False):
            found[f"torch/cuda/float16{'' if graphs else '/no-graphs'}"] = TorchEngine(
                directory,
                tokenizer,
                model_name=name,
                device="cuda",
                dtype="float16",
                max_batch_size=16,
                cuda_graphs=graphs,
            )
    try:
        from whisperwire.server.engines.ctranslate2 import CTranslate2Engine

        found["ctranslate2/cpu"] = CTranslate2Engine(directory, model_name=name, threads=8)
    except ImportError as error:
        found["ctranslate2/cpu"] = f"not installed here ({error})"
    return found


async def compare_engines(name: str, directory: Path) -> dict[str, Any]:
    tokenizer = WhisperTokenizer.from_dir(directory)
    report: dict[str, Any] = {}
    for label, engine in engines(name, directory, tokenizer).items():
        if isinstance(engine, str):
            report[label] = {"skipped": engine}
            continue
        pipeline = SpeechPipeline(tokenizer, engine.info, DirectRunner(engine))
        report[label] = await measure(pipeline, tokenizer.multilingual)
    return report


async def measure(pipeline: SpeechPipeline, multilingual: bool) -> dict[str, Any]:
    options = DecodeOptions(language=None if multilingual else "en")
    clips: dict[str, Any] = {}
    pairs = []
    for clip in (*ENGLISH_CLIPS, CHINESE) if multilingual else ENGLISH_CLIPS:
        await pipeline.transcribe_bytes(clip.read(), options)  # warm
        started = time.perf_counter()
        transcript = await pipeline.transcribe_bytes(clip.read(), options)
        seconds = time.perf_counter() - started
        clips[clip.name] = {
            "text": transcript.text,
            "wer": round(wer(clip.reference, transcript.text), 4),
            "language": transcript.language,
            "language_probability": transcript.language_probability,
            "seconds": round(seconds, 4),
        }
        if clip.language == "en":
            pairs.append((clip.reference, transcript.text))
    return {
        "english_wer": round(corpus_wer(pairs), 4),
        "clips": clips,
        "long_form": await long_form(pipeline),
    }


async def long_form(pipeline: SpeechPipeline) -> dict[str, Any]:
    order = [c for _ in range(LONG_FORM_REPEATS) for c in ENGLISH_CLIPS]
    audio = np.concatenate([x for c in order for x in (load_pcm16k(c), silence(2.0))])
    data = to_wav_bytes(audio)
    options = DecodeOptions(language="en")
    await pipeline.transcribe_bytes(data, options)  # warm
    started = time.perf_counter()
    transcript = await pipeline.transcribe_bytes(data, options)
    seconds = time.perf_counter() - started
    duration = len(audio) / 16000
    reference = " ".join(c.reference for c in order)
    return {
        "audio_seconds": round(duration, 1),
        "wer": round(wer(reference, transcript.text), 4),
        "seconds": round(seconds, 3),
        "rtfx": round(duration / seconds, 1),
    }
