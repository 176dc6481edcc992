"""Collects every benchmarks/results/*.json into benchmarks/results/SUMMARY.md.

python -m benchmarks.summary
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR

HEADER = """# Benchmark summary

Written by `benchmarks/run_all.sh` (`python -m benchmarks.summary`) from the JSON files beside
it. Machine: {cpus} CPUs. Each figure's *anchor* is what it is compared with: the other side
measured in the same run (interleaved), or a fixed number from
[docs/performance.md](../../docs/performance.md). *ratio* = value /
anchor (for same-run comparisons: the median of per-pair ratios). Absolute times depend on the
load of the machine, given per run below (`os.getloadavg()`, 1/5/15 min); ratios of interleaved
runs much less so. Where a figure says "quiet pairs", only pairs during which other processes
used at most 10 % of the machine's CPU were counted (benchmarks/load.py).

Figures of the load and fault tests (tests/load, tests/test_faults.py), when run with
`--report-dir benchmarks/results/load`, are in [load/](load/).
"""


def load_results(directory: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    paths = sorted(directory.glob("*.json"), key=lambda p: (p.stem.split("-")[0], p.stem))
    return [json.loads(p.read_text()) for p in paths]


def render(results: list[dict[str, Any]], images: list[str] | None = None) -> str:
    cpus = results[0]["run"]["cpus"] if results else "?"
    lines = [HEADER.format(cpus=cpus), _runs_table(results), "", _figures_table(results), ""]
    return "\n".join(lines + _image_links(images or []))


def _image_links(images: list[str]) -> list[str]:
    if not images:
        return []
    links = [f"![{Path(name).stem}]({name})\n" for name in images]
    return ["## Plots", "", "Drawn by `python -m benchmarks.plot` from the JSON files.", "", *links]


def plot_images(directory: Path = RESULTS_DIR) -> list[str]:
    """The PNGs beside the results: those there now and those benchmarks.plot draws from the
    results there (run_all.sh draws them right after this summary)."""
    from benchmarks.plot import planned

    drawn = {path.with_suffix(".png").name for path, _ in planned(directory)}
    return sorted(drawn | {path.name for path in directory.glob("*.png")})


def _runs_table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| benchmark | started | command | loadavg at start | during | at end |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        run = r["run"]
        during = "; ".join(_load(x) for x in run["loadavg_samples"]) or "-"
        command = " ".join(["python", "-m", f"benchmarks.{_module(run)}", *run["argv"][1:]])
        start, end = _load(run["loadavg_start"]), _load(run["loadavg_end"])
        rows.append(
            f"| {run['benchmark']} | {run['started']} | `{command}` | {start} | {during} | {end} |"
        )
    return "\n".join(rows)


def _module(run: dict[str, Any]) -> str:
    return Path(run["argv"][0]).stem if run["argv"] else run["benchmark"]


def _load(values: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def _figures_table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| benchmark | figure | value | anchor | ratio | goal | met | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for f in r["figures"]:
            rows.append(
                f"| {r['run']['benchmark']} | {f['name']} | {_number(f['value'])} {f['unit']} "
                f"| {f['anchor']}{_anchor_value(f)} | {_ratio(f['ratio'])} | {f['goal']} "
                f"| {_met(f['goal_met'])} | {f['note']} |"
            )
    return "\n".join(rows)


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def _anchor_value(f: dict[str, Any]) -> str:
    return "" if f["anchor_value"] is None else f": {_number(f['anchor_value'])} {f['unit']}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _met(value: bool | None) -> str:
    return {True: "yes", False: "**no**", None: ""}[value]


def main() -> None:
    path = RESULTS_DIR / "SUMMARY.md"
    path.write_text(render(load_results(), plot_images()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
