"""This pipeline vs faster-whisper on the same model, compute type, threads and audio.

Each side runs in its own worker process (so ru_maxrss is that side's peak RSS) and the main
process asks them in turn, A, B, B, A, ..., so machine noise hits both sides alike.

- Short clips (tests/data): `SpeechPipeline.transcribe` vs `WhisperModel.transcribe`.
- A long file (the English clips repeated, 1 s pauses, 12 times: 305 s, >= 5 min):
  `BatchedInferencePipeline` at batch sizes 1..16 (and its sequential `WhisperModel.transcribe`)
  vs our pipeline with the engine's max_batch_size 1/4/8; best vs best, then head to head; every
  clip's first words must appear in order in our text.

Both sides: greedy (beam 1), timestamps on (faster-whisper without_timestamps=False, ours
DecodeOptions(timestamps=True)), Whisper's default temperature fallback and thresholds, no
initial prompt; language auto-detected (default) or forced on both. Audio is decoded once by
the main process, so neither side's timing includes file decoding.

    python -m benchmarks.pipeline_vs_faster_whisper                # base + tiny.en, ~6.5 min
    python -m benchmarks.pipeline_vs_faster_whisper --models base --rounds 9 --long-rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from benchmarks.common import (
    ENGLISH_CLIPS,
    SAMPLE_RATE,
    SHORT_CLIPS,
    Audio,
    Figure,
    Run,
    Worker,
    clip_key,
    first_words,
    interleaved,
    load_clip,
    median,
    package_versions,
    peak_rss_mib,
    phrases_in_order,
    reply,
    report,
    table,
    worker_channel,
)
from benchmarks.load import QUIET, ForeignLoad, Pair, choose
from tests.speech import Clip, normalise, wer

LONG = "long"
OURS, FW = "ours", "faster-whisper"
ANCHOR_BATCHED_BASE = 45.7  # x real time, base int8, 2 cores, batched: docs/performance.md


# ---- audio --------------------------------------------------------------------------------
def long_file(cycles: int, pause: float = 1.0) -> tuple[Audio, list[list[str]], str]:
    """The English clips, each followed by a pause, `cycles` times; plus the expected first
    words of every clip occurrence and the full reference text."""
    gap = np.zeros(int(pause * SAMPLE_RATE), dtype=np.float32)
    parts, phrases, references = [], [], []
    for _ in range(cycles):
        for clip in ENGLISH_CLIPS:
            parts += [load_clip(clip), gap]
            phrases.append(first_words(clip))
            references.append(clip.reference)
    return np.concatenate(parts), phrases, " ".join(references)


def write_audio(directory: Path, cycles: int) -> tuple[dict[str, float], list[list[str]], str]:
    audio = {clip_key(c): load_clip(c) for c in SHORT_CLIPS}
    audio[LONG], phrases, reference = long_file(cycles)
    np.savez(directory / "audio.npz", **audio)
    return {k: len(v) / SAMPLE_RATE for k, v in audio.items()}, phrases, reference


# ---- workers --------------------------------------------------------------------------------
def serve_worker(args: argparse.Namespace) -> None:
    requests, out = worker_channel()
    audio = dict(np.load(Path(args.audio_dir) / "audio.npz"))
    language = None if args.language == "auto" else args.language
    transcribe = (ours_transcriber if args.worker == OURS else fw_transcriber)(args, language)
    transcribe(audio[clip_key(SHORT_CLIPS[0])], "default", 8)  # warm-up, untimed
    reply(out, ready=True, peak_rss_mib=peak_rss_mib())
    for line in requests:
        request = _parse(line)
        if request["op"] == "quit":
            reply(out, peak_rss_mib=peak_rss_mib())
            return
        _run_request(out, transcribe, audio, request)


def _parse(line: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(line)
    return parsed


Transcriber = Callable[[Audio, str, int], tuple[str, str | None]]


def _run_request(
    out: IO[str], transcribe: Transcriber, audio: dict[str, Audio], request: dict[str, Any]
) -> None:
    samples = audio[request["audio"]]
    started, cpu = time.perf_counter(), time.process_time()
    text, language = transcribe(samples, request["mode"], request["batch_size"])
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    rss = peak_rss_mib()
    reply(out, seconds=seconds, cpu_s=cpu_s, text=text, language=language, peak_rss_mib=rss)


def ours_transcriber(args: argparse.Namespace, language: str | None) -> Transcriber:
    from whisperwire.server.domain import DecodeOptions
    from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
    from whisperwire.server.models import resolve_model
    from whisperwire.server.pipeline import SpeechPipeline
    from whisperwire.server.runner import DirectRunner
    from whisperwire.server.tokenizer import WhisperTokenizer

    model_dir = resolve_model(args.model)
    engine = CTranslate2Engine(
        model_dir, model_name=args.model, compute_type=args.compute, threads=args.threads
    )
    pipeline = SpeechPipeline(
        WhisperTokenizer.from_dir(model_dir), engine.info, DirectRunner(engine)
    )
    options = DecodeOptions(language=language, timestamps=True, beam_size=1)
    loop = asyncio.new_event_loop()

    def transcribe(samples: Audio, mode: str, batch_size: int) -> tuple[str, str | None]:
        # Same as CTranslate2Engine(max_batch_size=...): DirectRunner reads it from info.
        engine.info = replace(engine.info, max_batch_size=batch_size)
        transcript = loop.run_until_complete(pipeline.transcribe(samples, options))
        return transcript.text, transcript.language

    return transcribe


def fw_transcriber(args: argparse.Namespace, language: str | None) -> Transcriber:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from whisperwire.server.models import resolve_model

    model = WhisperModel(
        str(resolve_model(args.model)),
        device="cpu",
        compute_type=args.compute,
        cpu_threads=args.threads,
        num_workers=1,
    )
    batched = BatchedInferencePipeline(model)
    common = {"beam_size": 1, "language": language, "without_timestamps": False}

    def transcribe(samples: Audio, mode: str, batch_size: int) -> tuple[str, str | None]:
        if mode == "batched":
            segments, info = batched.transcribe(samples, batch_size=batch_size, **common)
        else:
            segments, info = model.transcribe(samples, **common)
        text = " ".join(s.text.strip() for s in segments)  # the generator does the work
        return text, info.language

    return transcribe


# ---- orchestration ------------------------------------------------------------------------
class Sides:
    """The two worker processes of one model."""

    def __init__(self, args: argparse.Namespace, model: str, compute: str, audio_dir: Path) -> None:
        common = [
            "-m",
            "benchmarks.pipeline_vs_faster_whisper",
            "--model",
            model,
            "--compute",
            compute,
            "--threads",
            str(args.threads),
            "--language",
            args.language,
            "--audio-dir",
            str(audio_dir),
        ]
        # One at a time: loading and warming up must not overlap.
        self.workers = {side: Worker(side, [*common, "--worker", side]) for side in (OURS, FW)}
        self.rss_after_load = {s: w.ready["peak_rss_mib"] for s, w in self.workers.items()}
        pids = [os.getpid(), *(w.pid for w in self.workers.values())]
        self.load = ForeignLoad(lambda: pids)
        self.quiet_wait = args.quiet_wait
        self._last_foreign = 0.0

    def run(
        self, side: str, audio: str, mode: str = "default", batch_size: int = 8
    ) -> dict[str, Any]:
        """One timed transcription; `foreign` is how busy the rest of the machine was."""
        busy = audio == LONG and self._last_foreign > QUIET
        waited = self.load.wait_quiet(self.quiet_wait) if busy else 0.0
        mark = self.load.mark()
        result = self.workers[side].call(op="run", audio=audio, mode=mode, batch_size=batch_size)
        self._last_foreign = self.load.since(mark)
        return {**result, "foreign": self._last_foreign, "waited_s": waited}

    def close(self) -> dict[str, float]:
        return {side: w.close()["peak_rss_mib"] for side, w in self.workers.items()}

    def kill(self) -> None:
        for w in self.workers.values():
            w.kill()


def short_clips(model: str) -> tuple[Clip, ...]:
    """English-only models skip the Chinese clip (both sides would only time hallucinations)."""
    return ENGLISH_CLIPS if model.endswith(".en") else SHORT_CLIPS


def bench_short(
    sides: Sides, clips: tuple[Clip, ...], durations: dict[str, float], rounds: int
) -> dict[str, Any]:
    """Per clip and round, both sides in alternating order; ratio = ours / faster-whisper speed."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        clip_key(c): {OURS: [], FW: []} for c in clips
    }
    for r in range(rounds):
        for i, clip in enumerate(clips):
            for side in interleaved(r + i, (OURS, FW)):
                runs[clip_key(clip)][side].append(sides.run(side, clip_key(clip)))
    pairs = {k: list(zip(by_side[OURS], by_side[FW], strict=True)) for k, by_side in runs.items()}
    per_clip = {k: _clip_summary(clip_pairs, durations[k]) for k, clip_pairs in pairs.items()}
    # Each pair ran back to back, so its ratio is the least noisy unit; the headline is the
    # median over (clip, round) pairs, the speeds are total audio / summed clip medians.
    chosen, basis = choose([p for clip_pairs in pairs.values() for p in clip_pairs])
    total_audio = sum(durations[k] for k in runs)
    return {
        "per_clip": per_clip,
        "x_realtime": {
            s: total_audio / sum(c["median_s"][s] for c in per_clip.values()) for s in (OURS, FW)
        },
        "basis": basis,
        "ratio_per_pair": [fw["seconds"] / ours["seconds"] for ours, fw in chosen],
        "ratio": median(fw["seconds"] / ours["seconds"] for ours, fw in chosen),
        "cpu_ratio": median(fw["cpu_s"] / ours["cpu_s"] for ours, fw in chosen),
        "foreign": [[r["foreign"] for r in p] for ps in pairs.values() for p in ps],
        "peak_rss_mib": {
            s: max(r["peak_rss_mib"] for by_side in runs.values() for r in by_side[s])
            for s in (OURS, FW)
        },
    }


def _clip_summary(pairs: list[Pair], duration: float) -> dict[str, Any]:
    chosen, basis = choose(pairs, minimum=2)
    medians = {s: median(p[i]["seconds"] for p in chosen) for i, s in enumerate((OURS, FW))}
    ours, fw = pairs[0]
    return {
        "audio_s": duration,
        "basis": basis,
        "median_s": medians,
        "x_realtime": {s: duration / m for s, m in medians.items()},
        "ratio": median(f["seconds"] / o["seconds"] for o, f in chosen),
        "language": {OURS: ours["language"], FW: fw["language"]},
        "text": {OURS: ours["text"], FW: fw["text"]},
    }


@dataclass(frozen=True)
class LongConfig:
    side: str
    mode: str  # "batched" (BatchedInferencePipeline) or "default"
    batch_size: int

    @property
    def label(self) -> str:
        if self.side == OURS:
            return f"ours, engine max_batch_size={self.batch_size}"
        if self.mode == "batched":
            return f"faster-whisper batched, batch_size={self.batch_size}"
        return "faster-whisper WhisperModel.transcribe (sequential)"


class LongBench:
    def __init__(
        self, sides: Sides, duration: float, phrases: list[list[str]], reference: str
    ) -> None:
        self.sides, self.duration = sides, duration
        self.phrases, self.reference = phrases, reference

    def measure(self, config: LongConfig) -> dict[str, Any]:
        result = self.sides.run(config.side, LONG, config.mode, config.batch_size)
        return {
            "label": config.label,
            "side": config.side,
            "mode": config.mode,
            "batch_size": config.batch_size,
            "seconds": result["seconds"],
            "cpu_s": result["cpu_s"],
            "x_realtime": self.duration / result["seconds"],
            "clips_found": phrases_in_order(result["text"], self.phrases),
            "clips": len(self.phrases),
            "wer": wer(self.reference, result["text"]),
            "words": len(normalise(result["text"]).split()),
            "language": result["language"],
            "peak_rss_mib": result["peak_rss_mib"],
            "foreign": result["foreign"],
        }

    def sweep(self, fw: list[LongConfig], ours: list[LongConfig]) -> list[dict[str, Any]]:
        """Every configuration once, the two sides alternating."""
        runs = []
        for i in range(max(len(fw), len(ours))):
            pair = [c[i] for c in (fw, ours) if i < len(c)]
            runs += [self.measure(c) for c in (pair if i % 2 == 0 else pair[::-1])]
        return runs

    def head_to_head(self, fw: LongConfig, ours: LongConfig, rounds: int) -> dict[str, Any]:
        runs: dict[str, list[dict[str, Any]]] = {OURS: [], FW: []}
        for r in range(rounds):
            for side in interleaved(r, (OURS, FW)):
                runs[side].append(self.measure(ours if side == OURS else fw))
        chosen, basis = choose(list(zip(runs[OURS], runs[FW], strict=True)), minimum=1)
        ratios = [o["x_realtime"] / f["x_realtime"] for o, f in chosen]
        return {
            "configs": {OURS: ours.label, FW: fw.label},
            "basis": basis,
            "x_realtime": {
                s: median(p[i]["x_realtime"] for p in chosen) for i, s in enumerate((OURS, FW))
            },
            "ratio_per_round": ratios,
            "ratio": median(ratios),
            "cpu_ratio": median(f["cpu_s"] / o["cpu_s"] for o, f in chosen),
            "all_clips_found": all(r["clips_found"] == r["clips"] for r in runs[OURS]),
            "runs": runs,
        }


def best(runs: list[dict[str, Any]], side: str, mode: str) -> LongConfig:
    mine = [r for r in runs if r["side"] == side and r["mode"] == mode]
    top = max(mine, key=lambda r: r["x_realtime"])
    return LongConfig(side, mode, top["batch_size"])


def bench_long(
    sides: Sides,
    args: argparse.Namespace,
    duration: float,
    phrases: list[list[str]],
    reference: str,
) -> dict[str, Any]:
    bench = LongBench(sides, duration, phrases, reference)
    fw = [LongConfig(FW, "batched", b) for b in args.fw_batch_sizes]
    if args.sequential:
        fw.append(LongConfig(FW, "default", 1))
    ours = [LongConfig(OURS, "default", b) for b in args.our_batch_sizes]
    sweep = bench.sweep(fw, ours)
    final = bench.head_to_head(
        best(sweep, FW, "batched"), best(sweep, OURS, "default"), args.long_rounds
    )
    words = len(normalise(reference).split())
    return {"audio_s": duration, "reference_words": words, "sweep": sweep, "head_to_head": final}


# ---- one model --------------------------------------------------------------------------
def bench_model(
    args: argparse.Namespace, model: str, audio_dir: Path, meta: dict[str, Any], run: Run
) -> dict[str, Any]:
    from whisperwire.server.engines.ctranslate2 import default_compute_type

    compute = default_compute_type(model, "cpu")
    print(
        f"\n== {model} ({compute}, {args.threads} threads, language {args.language}) ==", flush=True
    )
    sides = Sides(args, model, compute, audio_dir)
    try:
        result: dict[str, Any] = {
            "compute_type": compute,
            "rss_after_load_mib": sides.rss_after_load,
        }
        result["short"] = bench_short(sides, short_clips(model), meta["durations"], args.rounds)
        run.sample_load()
        print(short_table(result["short"]), flush=True)
        if not args.skip_long:
            result["long"] = bench_long(
                sides, args, meta["durations"][LONG], meta["phrases"], meta["reference"]
            )
            run.sample_load()
            print(long_table(result["long"]), flush=True)
        result["peak_rss_mib"] = sides.close()
    finally:
        sides.kill()
    return result


def short_table(short: dict[str, Any]) -> str:
    rows = [
        (
            k,
            c["audio_s"],
            c["median_s"][FW],
            c["median_s"][OURS],
            c["x_realtime"][FW],
            c["x_realtime"][OURS],
            c["ratio"],
            f"{c['language'][FW]}/{c['language'][OURS]}",
        )
        for k, c in short["per_clip"].items()
    ]
    rows.append(
        (
            "all clips (median pair ratio)",
            None,
            None,
            None,
            short["x_realtime"][FW],
            short["x_realtime"][OURS],
            short["ratio"],
            "",
        )
    )
    headers = ("clip", "audio s", "fw s", "ours s", "fw xRT", "ours xRT", "ours/fw", "lang fw/ours")
    cpu = f"ratio over {short['basis']}; CPU time fw/ours (median pair) = {short['cpu_ratio']:.2f}"
    return f"{table(headers, rows)}\n{cpu}"


def long_table(long: dict[str, Any]) -> str:
    h2h = long["head_to_head"]
    rows = [_long_row("sweep", r) for r in long["sweep"]]
    rows += [_long_row("best vs best", r) for side in (FW, OURS) for r in h2h["runs"][side]]
    headers = (
        "phase",
        "configuration",
        "s",
        "cpu s",
        "xRT",
        "clips in order",
        "words",
        "WER",
        "others",
    )
    text = table(headers, rows)
    per_round = _fmt(h2h["ratio_per_round"])
    return (
        f"{text}\nbest vs best, {h2h['basis']}: ours/fw speed = {h2h['ratio']:.2f} "
        f"(per pair {per_round}); CPU time fw/ours = {h2h['cpu_ratio']:.2f}\n"
        f"(reference: {long['reference_words']} words; "
        "others = share of the machine's CPU used by other processes during the run)"
    )


def _long_row(phase: str, r: dict[str, Any]) -> tuple[object, ...]:
    return (
        phase,
        r["label"],
        r["seconds"],
        r["cpu_s"],
        r["x_realtime"],
        f"{r['clips_found']}/{r['clips']}",
        r["words"],
        r["wer"],
        f"{100 * r['foreign']:.0f} %",
    )


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


# ---- figures ------------------------------------------------------------------------------
def figures_for(model: str, result: dict[str, Any]) -> list[Figure]:
    compute = result["compute_type"]
    tag = f"{model} {compute}"
    short = result["short"]
    figures = [
        Figure(
            f"short clips, {tag}: ours xRT",
            short["x_realtime"][OURS],
            "x real time",
            "faster-whisper WhisperModel.transcribe, same run",
            short["x_realtime"][FW],
            goal=">= 1.0x faster-whisper",
            goal_met=short["ratio"] >= 1.0,
            ratio=short["ratio"],
            note=(
                f"ratio = median over {short['basis']} of fw seconds / ours seconds; "
                f"CPU-time ratio {short['cpu_ratio']:.2f}; clips: {', '.join(short['per_clip'])}"
            ),
        )
    ]
    if "long" in result:
        figures += _long_figures(model, tag, result["long"])
    figures += [
        Figure(
            f"peak RSS {phase}, {tag}",
            rss[OURS],
            "MiB",
            "faster-whisper worker, same work",
            rss[FW],
            note="ru_maxrss of each side's own process",
        )
        for phase, rss in (
            ("after the short clips", short["peak_rss_mib"]),
            ("over the whole run (incl. long file)", result["peak_rss_mib"]),
        )
    ]
    return figures


def _long_figures(model: str, tag: str, long: dict[str, Any]) -> list[Figure]:
    h2h = long["head_to_head"]
    fw_best = h2h["x_realtime"][FW]
    figures = [
        Figure(
            f"{long['audio_s'] / 60:.1f} min file, {tag}: ours xRT",
            h2h["x_realtime"][OURS],
            "x real time",
            f"{h2h['configs'][FW]}, same run",
            fw_best,
            goal=">= 1.0x and every clip's words",
            goal_met=h2h["ratio"] >= 1.0 and h2h["all_clips_found"],
            ratio=h2h["ratio"],
            note=(
                f"{h2h['configs'][OURS]}; {h2h['basis']}; every clip's first words in order: "
                f"{h2h['all_clips_found']}; CPU-time ratio {h2h['cpu_ratio']:.2f}"
            ),
        )
    ]
    if model == "base":
        figures.append(
            Figure(
                f"faster-whisper batched best, {tag} (calibration)",
                fw_best,
                "x real time",
                "45.7x measured on 2 cores (docs/performance.md)",
                ANCHOR_BATCHED_BASE,
                note=f"{h2h['basis']}; the machine's load decides this one",
            )
        )
    return figures


# ---- main ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=_names, default=["base", "tiny.en"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--language", default="auto", help='"auto" (both detect) or a code')
    parser.add_argument("--rounds", type=int, default=5, help="rounds over the short clips")
    parser.add_argument("--long-rounds", type=int, default=3, help="best-vs-best long-file pairs")
    parser.add_argument(
        "--long-cycles", type=int, default=12, help="repeats of the 3 clips (12: 305 s)"
    )
    parser.add_argument("--fw-batch-sizes", type=_ints, default=[1, 2, 4, 8, 16])
    parser.add_argument("--our-batch-sizes", type=_ints, default=[1, 4, 8])
    parser.add_argument("--no-sequential", dest="sequential", action="store_false")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        help="before a long-file run after a busy one, wait up to this many s for quiet",
    )
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--tag", default="", help="results/pipeline_vs_faster_whisper-<tag>.json")
    # worker mode (internal)
    parser.add_argument("--worker", choices=(OURS, FW), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--compute", help=argparse.SUPPRESS)
    parser.add_argument("--audio-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    return [int(t) for t in _names(text)]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        serve_worker(args)
        return
    run = Run("pipeline_vs_faster_whisper" + (f"-{args.tag}" if args.tag else ""))
    run.versions = package_versions("faster-whisper", "ctranslate2", "numpy", "onnxruntime")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ww-bench-") as tmp:
        durations, phrases, reference = write_audio(Path(tmp), args.long_cycles)
        meta = {"durations": durations, "phrases": phrases, "reference": reference}
        for model in args.models:
            results[model] = bench_model(args, model, Path(tmp), meta, run)
    figures = [f for model, result in results.items() for f in figures_for(model, result)]
    for f in figures:
        f.name += f" [{args.tag}]" if args.tag else ""
    details = {"settings": _settings(args), "audio_s": durations, "models": results}
    report(run, figures, details)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "threads": args.threads,
        "language": args.language,
        "beam_size": 1,
        "timestamps": True,
        "rounds": args.rounds,
        "long_rounds": args.long_rounds,
        "long_cycles": args.long_cycles,
        "fw_batch_sizes": args.fw_batch_sizes,
        "our_batch_sizes": args.our_batch_sizes,
        "sequential": args.sequential,
        "quiet_wait": args.quiet_wait,
    }


if __name__ == "__main__":
    main(sys.argv[1:])
