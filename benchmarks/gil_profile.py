"""Who holds the server's interpreter lock: a summary of a py-spy profile taken with `--gil`.

py-spy (a sampling profiler, `pip install py-spy`) attached to a running server with
`--gil --threads --format raw` records only the samples where a thread holds the lock, one
line per stack: `thread (TID): NAME;frame;frame;... COUNT`. This prints each thread's share of
the lock and, per thread, the innermost frames it held it in. With `--seconds` and `--rate`
(the recording's), shares of wall time too.

    py-spy record --pid PID --duration 15 --rate 250 --nonblocking --gil --threads \\
        --format raw -o gil.txt
    python -m benchmarks.gil_profile gil.txt --seconds 15 --rate 250
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path


def read(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stacks.append((stack.split(";"), int(count)))
    return stacks


def summarise(
    stacks: list[tuple[list[str], int]], depth: int, top: int, wall_samples: float | None
) -> str:
    by_thread: Counter[str] = Counter()
    frames: dict[str, Counter[str]] = defaultdict(Counter)
    for stack, count in stacks:
        thread = stack[0].split(": ", 1)[-1]
        by_thread[thread] += count
        frames[thread][" <- ".join(reversed(stack[1:][-depth:]))] += count
    held = sum(by_thread.values())
    lines = [f"{held} samples holding the lock"]
    if wall_samples:
        lines[0] += f": {held / wall_samples:.0%} of wall time"
    for thread, count in by_thread.most_common():
        share = f"{count / held:6.1%} of the lock"
        if wall_samples:
            share += f", {count / wall_samples:6.1%} of wall time"
        lines.append(f"\n{thread}: {share}")
        for where, n in frames[thread].most_common(top):
            lines.append(f"  {n:6d}  {where}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path)
    parser.add_argument("--seconds", type=float, help="the recording's duration")
    parser.add_argument("--rate", type=float, default=100.0, help="its samples per second")
    parser.add_argument("--depth", type=int, default=2, help="innermost frames shown")
    parser.add_argument("--top", type=int, default=5, help="stacks shown per thread")
    args = parser.parse_args()
    wall = args.seconds * args.rate if args.seconds else None
    print(summarise(read(args.profile), args.depth, args.top, wall))


if __name__ == "__main__":
    main()
