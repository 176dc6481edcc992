#!/usr/bin/env bash
# Runs every benchmark with its defaults (about 24 minutes on 2 idle cores), writes
# benchmarks/results/SUMMARY.md and draws the PNGs beside it. Results are JSON files in
# benchmarks/results/.
#   benchmarks/run_all.sh            # everything
#   PYTHON=python benchmarks/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

# What the benchmarks import beyond the server (pyproject's bench extra).
if ! "$PY" -c "import matplotlib, faster_whisper, jiwer" 2>/dev/null; then
  "$PY" -m pip install -q -e ".[bench]"
fi

run() {
  echo "=== $* ($(cut -d' ' -f1-3 /proc/loadavg) load)"
  "$PY" -m "$@"
}

run benchmarks.pipeline_vs_faster_whisper
run benchmarks.service_latency
run benchmarks.stream_capacity
run benchmarks.scaling
run benchmarks.batch_memory
run benchmarks.http_vs_grpc
run benchmarks.upload_handoff
run benchmarks.summary
run benchmarks.plot
