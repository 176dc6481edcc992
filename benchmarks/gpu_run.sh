#!/usr/bin/env bash
# One call on the lent GPU machine (see benchmarks/README.md, "On a GPU").
#
# The machine's image has torch, transformers and numpy but not the server's other wheels,
# and a call carries at most 64 MiB. So what the run needs travels in an ignored `.carry/`
# folder over several back-to-back calls, and lands outside the tree, where it outlives a
# call on the same machine:
#   .carry/whl/*.whl                 installed once into /root/site
#   .carry/models/<name>/*           the small files of each model directory
#   .carry/part0, .carry/rest<N>     consecutive pieces of tiny.en's model.bin followed by
#                                    base's; joined and checked against .carry/sums.txt
# Then it runs the python module and arguments it is given, e.g.
#   benchmarks/gpu_run.sh benchmarks.gpu_engine --sections alone --out "$OUT/gpu.json"
set -uo pipefail
cd "$(dirname "$0")/.."
WORK=${GPU_WORK:-/root/w}
mkdir -p "$WORK/parts" "$WORK/models"

if compgen -G ".carry/whl/*.whl" >/dev/null && [ ! -f /root/site/.installed ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /root/site .carry/whl/*.whl && touch /root/site/.installed
fi
[ -d .carry/models ] && cp -r .carry/models/. "$WORK/models/"
[ -f .carry/sums.txt ] && cp .carry/sums.txt .carry/tiny_size.txt "$WORK/"
for piece in .carry/part* .carry/rest*; do [ -f "$piece" ] && cp "$piece" "$WORK/parts/"; done

join_models() {
  [ -f "$WORK/models/base/model.bin" ] && return 0
  local expected=5 have
  have=$(ls "$WORK/parts" | wc -l)
  [ "$have" -lt "$expected" ] && { echo "model pieces: $have of $expected here"; return 0; }
  cat "$WORK/parts/part0" "$WORK"/parts/rest* > "$WORK/combined.bin"
  local tiny_size
  tiny_size=$(cat "$WORK/tiny_size.txt")
  head -c "$tiny_size" "$WORK/combined.bin" > "$WORK/models/tiny.en/model.bin"
  tail -c +"$((tiny_size + 1))" "$WORK/combined.bin" > "$WORK/models/base/model.bin"
  rm "$WORK/combined.bin"
  (cd "$WORK" && awk '{print $1}' sums.txt | paste - <(echo "models/tiny.en/model.bin"; echo "models/base/model.bin") -d' ' \
    | sed 's/ /  /' | sha256sum -c -) || { echo "model checksum mismatch"; rm -f "$WORK"/models/*/model.bin; }
}
join_models

export PYTHONPATH="/root/site:$PWD/server:$PWD/client:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
[ $# -eq 0 ] && exit 0
exec python3 -m "$@"
