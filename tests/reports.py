"""Figures the load and fault tests measure (rates, memory, exit times): printed, and written as
`<name>.json` to a temporary folder, or to `--report-dir` when a run is meant to publish them
(`--report-dir benchmarks/results/load`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

Publish = Callable[[str, Mapping[str, object]], None]


def publisher(directory: Path) -> Publish:
    def publish(name: str, figures: Mapping[str, object]) -> None:
        text = json.dumps(figures, indent=2)
        print(f"\n{name}:\n{text}")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{name}.json").write_text(text + "\n")

    return publish
