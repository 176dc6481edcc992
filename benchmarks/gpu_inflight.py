"""The torch engine's in-flight decoding on a GPU, in one process: does it decode like the
whole-batch path (CUDA graphs on both), and what does it cost or gain in raw throughput?

- `check`: the English clips (with and without timestamps) decoded as one whole batch, then
  in flight with staggered joins, the last urgent (decoded in its own slots while the others
  wait); token ids must match, log-probs within 1e-2 (float16).
- `throughput`: the same W windows (real clips, repeated) decoded as whole batches of
  `--max-batch-size`, then in flight with every free slot refilled at once; windows per
  second of each and their ratio (the anchor is the whole-batch figure of the same run).

    python -m benchmarks.gpu_inflight --model /root/w/models/base --out inflight.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from tests.speech import ENGLISH_CLIPS, load_pcm16k
from whisperwire.server.domain import DecodeOptions
from whisperwire.server.engine import Generation, GenerationParams, WindowRequest
from whisperwire.server.engines.torch import TorchEngine, load_torch_engine
from whisperwire.server.engines.torch_whisper.inflight import CHECK_EVERY
from whisperwire.server.features import window_features
from whisperwire.server.tokenizer import WhisperTokenizer


def check(engine: TorchEngine, tokenizer: WhisperTokenizer) -> dict[str, Any]:
    mels = [window_features(load_pcm16k(c), engine.info.n_mels) for c in ENGLISH_CLIPS]
    params = GenerationParams(max_new_tokens=224, suppress_tokens=tokenizer.non_speech_tokens())
    out: dict[str, Any] = {}
    for timestamps in (False, True):
        prompt = tokenizer.prompt(language="en", task=DecodeOptions().task, timestamps=timestamps)
        whole = engine.generate(mels, [prompt] * len(mels), params)
        # The last joins urgent: it decodes in its own slots while the others wait.
        last = len(mels) - 1
        requests = [
            WindowRequest(i, m, prompt, params, urgent=i == last) for i, m in enumerate(mels)
        ]
        got: dict[int, Generation] = {}
        for advance in range(300):
            admit = requests[advance : advance + 1]  # one joins per advance
            got.update(_ok(engine.advance(admit, [])))
            if len(got) == len(mels):
                break
        out["timestamps" if timestamps else "text"] = [
            {
                "clip": clip.name,
                "tokens_equal": got[i].token_ids == w.token_ids,
                "logprob_delta": abs((got[i].cum_logprob or 0) - (w.cum_logprob or 0)),
                "text": tokenizer.decode(got[i].token_ids),
            }
            for i, (clip, w) in enumerate(zip(ENGLISH_CLIPS, whole, strict=True))
        ]
    return out


def throughput(
    engine: TorchEngine, tokenizer: WhisperTokenizer, windows: int, rows: int
) -> dict[str, Any]:
    clips = [window_features(load_pcm16k(c), engine.info.n_mels) for c in ENGLISH_CLIPS]
    mels = [clips[i % len(clips)] for i in range(windows)]
    prompt = tokenizer.prompt(language="en", task=DecodeOptions().task, timestamps=True)
    params = GenerationParams(max_new_tokens=224, suppress_tokens=tokenizer.non_speech_tokens())
    engine.generate(mels[:rows], [prompt] * rows, params)  # warm-up
    torch.cuda.synchronize()
    started = time.perf_counter()
    for first in range(0, windows, rows):
        chunk = mels[first : first + rows]
        engine.generate(chunk, [prompt] * len(chunk), params)
    whole = time.perf_counter() - started

    out: dict[str, Any] = {
        "windows": windows,
        "slots": rows,
        "whole_batch_windows_per_second": round(windows / whole, 1),
    }
    requests = [WindowRequest(i, m, prompt, params) for i, m in enumerate(mels)]
    out["in_flight_first_run_seconds"] = round(_refill_run(engine, params, requests), 3)
    for steps in STEP_SWEEP:
        engine._inflight.steps_per_advance = steps
        inflight = _refill_run(engine, params, requests)
        out[f"in_flight_windows_per_second_steps{steps}"] = round(windows / inflight, 1)
        out[f"in_flight_over_whole_steps{steps}"] = round(whole / inflight, 3)
    engine._inflight.steps_per_advance = STEP_SWEEP[0]
    out["breakdown_steps4"] = _breakdown(engine, params, requests)
    return out


STEP_SWEEP = (4, 8, 16)


def _refill_run(
    engine: TorchEngine, params: GenerationParams, requests: list[WindowRequest]
) -> float:
    """Seconds to decode every request in flight, refilling every free slot at once."""
    queue, done = list(requests), 0
    started = time.perf_counter()
    while done < len(requests):
        free = engine.free_slots(params)
        admit, queue = queue[:free], queue[free:]
        done += len(engine.advance(admit, []))
    return time.perf_counter() - started


def _breakdown(
    engine: TorchEngine, params: GenerationParams, requests: list[WindowRequest]
) -> dict[str, Any]:
    """Where in-flight time goes: each phase timed to a CUDA synchronise (slows the run)."""
    decoder = engine._inflight
    spent: dict[str, float] = {}
    calls: dict[str, int] = {}

    def timed(name: str, method: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            torch.cuda.synchronize()
            began = time.perf_counter()
            result = method(*args, **kwargs)
            torch.cuda.synchronize()
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - began
            calls[name] = calls.get(name, 0) + 1
            return result

        return run

    originals = {n: getattr(decoder, n) for n in ("admit", "_steps", "_collect_finished", "encode")}
    for name, method in originals.items():
        setattr(decoder, name, timed(name, method))
    try:
        total = _refill_run(engine, params, requests)
    finally:
        for name in originals:
            delattr(decoder, name)
    return {
        "total_seconds": round(total, 3),
        "seconds": {k: round(v, 3) for k, v in spent.items()},
        "calls": calls,
        "steps_per_window": round(
            calls.get("_steps", 0) * CHECK_EVERY * decoder.rows / len(requests), 1
        ),
    }


def _ok(results: Any) -> dict[int, Generation]:
    return {t: g for t, g in results.items() if isinstance(g, Generation)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--windows", type=int, default=512)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    engine, tokenizer = load_torch_engine(
        args.model, device=args.device, dtype=None, max_batch_size=args.max_batch_size
    )
    results: dict[str, Any] = {
        "model": args.model,
        "device": engine.info.device,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_and_capture_seconds": round(time.perf_counter() - started, 1),
    }
    results["check"] = check(engine, tokenizer)
    args.out.write_text(json.dumps(results, indent=2))
    if args.device == "cuda":
        results["throughput"] = throughput(engine, tokenizer, args.windows, args.max_batch_size)
        results["gpu_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2), flush=True)


if __name__ == "__main__":
    main()
