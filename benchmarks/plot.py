"""Draws benchmarks/results/*.json as PNGs beside them (matplotlib, Agg: no display needed).

- scaling*.json -> the same name .png: release→final p50/p95 and throughput against the number
  of concurrent push-to-talk streams (log2 axis), one line per model;
- pipeline_vs_faster_whisper*.json -> the same name .png: x real time of ours and
  faster-whisper, short clips and the long file, per model (the head-to-head configurations).

    python -m benchmarks.plot        # needs matplotlib: pip install -e ".[bench]"
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR
from benchmarks.load import QUIET

OURS, THEIRS = "ours", "faster-whisper"


def draw_scaling(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4.2))
    for model, data in result["details"]["models"].items():
        levels = sorted(data["levels"], key=lambda lv: lv["streams"])
        ns = [lv["streams"] for lv in levels]
        p50 = [lv["latency_ms"]["p50"] for lv in levels]
        p95 = [lv["latency_ms"]["p95"] for lv in levels]
        (line,) = latency.plot(ns, p50, marker="o", label=f"{model} p50")
        latency.plot(ns, p95, marker="^", ls="--", color=line.get_color(), label=f"{model} p95")
        rate = [lv["audio_s_per_s"] for lv in levels]
        throughput.plot(ns, rate, marker="o", color=line.get_color(), label=model)
        ideal = [rate[0] * n / ns[0] for n in ns]
        throughput.plot(ns, ideal, ls=":", color=line.get_color(), label=f"{model}, linear")
        _mark_busy(latency, levels, p95)
    ns = sorted({lv["streams"] for d in result["details"]["models"].values() for lv in d["levels"]})
    _streams_axis(latency, "release→final latency (ms)", ns)
    _streams_axis(throughput, "audio seconds finalized per wall second", ns)
    fig.suptitle(f"Concurrent push-to-talk streams, CPU engine ({_run_note(result)})")
    _save(fig, path)


def _mark_busy(ax: Any, levels: list[dict[str, Any]], heights: list[float]) -> None:
    """Levels during which other processes used the machine: their times are inflated."""
    for lv, y in zip(levels, heights, strict=True):
        if lv["foreign"] > QUIET:
            text = f"others {100 * lv['foreign']:.0f} %"
            ax.annotate(text, (lv["streams"], y), fontsize="x-small", color="red")


def _streams_axis(ax: Any, ylabel: str, ns: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns)
    ax.xaxis.set_major_formatter(lambda x, _: f"{x:g}")
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def draw_pipeline(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    details = result["details"]
    models = list(details["models"])
    minutes = details["audio_s"]["long"] / 60
    fig, panels = plt.subplots(1, 2, figsize=(11, 4.2))
    short = {m: details["models"][m]["short"]["x_realtime"] for m in models}
    long = {m: details["models"][m]["long"]["head_to_head"]["x_realtime"] for m in models}
    _bars(panels[0], models, short, "short clips (SpeechPipeline vs WhisperModel)")
    _bars(panels[1], models, long, f"{minutes:.1f} min file (best batch size of each side)")
    fig.suptitle(f"Ours vs faster-whisper, same model and threads ({_run_note(result)})")
    _save(fig, path)


def _bars(ax: Any, models: list[str], xrt: dict[str, dict[str, float]], title: str) -> None:
    width = 0.38
    for i, side in enumerate((OURS, THEIRS)):
        xs = [m + (i - 0.5) * width for m in range(len(models))]
        values = [xrt[model][side] for model in models]
        bars = ax.bar(xs, values, width, label=side)
        ax.bar_label(bars, fmt="%.1f", fontsize="small")
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("x real time (audio s per wall s)")
    ax.set_title(title, fontsize="medium")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")


def _run_note(result: dict[str, Any]) -> str:
    run = result["run"]
    return f"{run['cpus']} CPUs, {run['started'][:10]}"


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


Drawer = Callable[[dict[str, Any], Path], None]
DRAWERS: dict[str, Drawer] = {"scaling": draw_scaling, "pipeline_vs_faster_whisper": draw_pipeline}


def planned(directory: Path = RESULTS_DIR) -> list[tuple[Path, Drawer]]:
    """Each result file that has a drawing, with the drawing's function; the PNG is the
    result's name with .png (summary.py links these)."""
    return [
        (path, DRAWERS[path.stem.split("-")[0]])
        for path in sorted(directory.glob("*.json"))
        if path.stem.split("-")[0] in DRAWERS
    ]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    for path, draw in planned():
        draw(json.loads(path.read_text()), path.with_suffix(".png"))


if __name__ == "__main__":
    main()
