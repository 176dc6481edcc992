"""Peak memory of one engine batch against its size (where the server's RSS under concurrent
streams goes).

Each (model, batch size) runs in a fresh process: load the CTranslate2 engine, decode one
window to warm up, note ru_maxrss, then decode `batch` copies of the jfk window in one
`generate` call and note ru_maxrss again. The growth is that batch's working memory; the
anchor is the same at batch size 1.

    python -m benchmarks.batch_memory                       # tiny.en and base, 1 2 4 8
    python -m benchmarks.batch_memory --models base --batches 1,8,16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from benchmarks.common import (
    REPO,
    Figure,
    Run,
    figures_table,
    ints,
    package_versions,
    peak_rss_mib,
    table,
    write_results,
)


def measure_in_this_process(model: str, batch: int) -> dict[str, float]:
    from tests.speech import JFK, load_pcm16k
    from whisperwire.server.domain import Task
    from whisperwire.server.engine import GenerationParams
    from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
    from whisperwire.server.features import window_features
    from whisperwire.server.models import resolve_model
    from whisperwire.server.tokenizer import WhisperTokenizer

    model_dir = resolve_model(model, allow_download=False)
    engine = CTranslate2Engine(model_dir, model_name=model, threads=2, max_batch_size=batch)
    tokenizer = WhisperTokenizer.from_dir(model_dir)
    window = window_features(load_pcm16k(JFK), engine.info.n_mels)
    prompt = tokenizer.prompt(language="en", task=Task.TRANSCRIBE, timestamps=False)
    params = GenerationParams(max_new_tokens=64)
    engine.generate([window], [prompt], params)  # warm-up: weights and one window in memory
    before = peak_rss_mib()
    engine.generate([window.copy() for _ in range(batch)], [prompt] * batch, params)
    return {"peak_before_mib": before, "peak_after_mib": peak_rss_mib()}


def measure(model: str, batch: int) -> dict[str, float]:
    """One fresh process per point: ru_maxrss only ever grows."""
    code = (
        "import json, sys; from benchmarks.batch_memory import measure_in_this_process; "
        f"print(json.dumps(measure_in_this_process({model!r}, {batch})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    point = json.loads(done.stdout.strip().splitlines()[-1])
    point["growth_mib"] = point["peak_after_mib"] - point["peak_before_mib"]
    return {"model": model, "batch": batch, **point}


def figures_for(points: list[dict[str, Any]]) -> list[Figure]:
    figures = []
    for model in dict.fromkeys(p["model"] for p in points):
        mine = {p["batch"]: p for p in points if p["model"] == model}
        if 1 not in mine:
            continue
        largest = mine[max(mine)]
        figures.append(
            Figure(
                f"engine peak RSS with a batch of {largest['batch']} windows, {model}",
                largest["peak_after_mib"],
                "MiB",
                "same with a batch of 1",
                mine[1]["peak_after_mib"],
                note=f"growth over the loaded engine: {largest['growth_mib']:.0f} vs "
                f"{mine[1]['growth_mib']:.0f} MiB; bounded by --max-batch-size",
            )
        )
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=lambda t: t.split(","), default=["tiny.en", "base"])
    parser.add_argument("--batches", type=ints, default=[1, 2, 4, 8])
    args = parser.parse_args(argv)

    run = Run("batch_memory")
    run.versions = package_versions("ctranslate2", "numpy")
    points = [measure(model, batch) for model in args.models for batch in args.batches]
    run.sample_load()
    headers = ("model", "batch", "peak before MiB", "peak after MiB", "growth MiB")
    rows = [
        (p["model"], p["batch"], p["peak_before_mib"], p["peak_after_mib"], p["growth_mib"])
        for p in points
    ]
    print(table(headers, rows))
    figures = figures_for(points)
    print(figures_table(figures))
    print(f"results in {write_results(run, figures, {'points': points})}")


if __name__ == "__main__":
    main()
