#!/usr/bin/env bash
# One call on the lent GPU machine (see benchmarks/README.md, "On a GPU").
#
# The machine's image has torch, transformers and numpy but not the server's other wheels,
# and a call carries at most 64 MiB. So what the run needs travels in an ignored `.carry/`
# folder over several back-to-back calls, and lands outside the tree, where it outlives a
# call on the same machine:
#   .carry/whl/*.whl                    installed once into /root/site
#   .carry/models/<name>/*              the small files of each model directory
#   .carry/pieces/<name>/part<N>        consecutive pieces of that model's model.bin, with
#   .carry/pieces/<name>/{count,sha256} how many pieces there are and the joined file's hash;
#                                       joined once all are here, then checked
# Then it runs the python module and arguments it is given, e.g.
#   benchmarks/gpu_run.sh benchmarks.gpu_engine --sections alone --out "$OUT/gpu.json"
set -uo pipefail
cd "$(dirname "$0")/.."
WORK=${GPU_WORK:-/root/w}
mkdir -p "$WORK/pieces" "$WORK/models"

if compgen -G ".carry/whl/*.whl" >/dev/null && [ ! -f /root/site/.installed ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /root/site .carry/whl/*.whl && touch /root/site/.installed
fi
[ -d .carry/models ] && cp -r .carry/models/. "$WORK/models/"
[ -d .carry/pieces ] && cp -r .carry/pieces/. "$WORK/pieces/"

join_model() {  # $1: a model name under $WORK/pieces
  local pieces="$WORK/pieces/$1" target="$WORK/models/$1/model.bin" have
  [ -f "$target" ] && return 0
  have=$(ls "$pieces"/part* 2>/dev/null | wc -l)
  if [ "$have" -lt "$(cat "$pieces/count")" ]; then
    echo "$1: $have of $(cat "$pieces/count") pieces here"
    return 0
  fi
  mkdir -p "$WORK/models/$1"
  ls "$pieces"/part* | sort -V | xargs cat > "$target"
  echo "$(cat "$pieces/sha256")  $target" | sha256sum -c - || { echo "$1: checksum mismatch"; rm -f "$target"; }
}
for name in $(ls "$WORK/pieces"); do join_model "$name"; done

# The tree runs from PYTHONPATH, not installed: give the `serve` subcommand the entry point
# an install would (pyproject.toml's whisperwire.commands), or `whisperwire serve` is missing.
ENTRY=/root/site/whisperwire_tree-0.dist-info
if [ -d /root/site ] && [ ! -f "$ENTRY/entry_points.txt" ]; then
  mkdir -p "$ENTRY"
  printf 'Metadata-Version: 2.1\nName: whisperwire-tree\nVersion: 0\n' > "$ENTRY/METADATA"
  sed -n '/entry-points."whisperwire.commands"/,/^$/p' pyproject.toml | tail -n +2 \
    | tr -d '"' | sed '1i [whisperwire.commands]' > "$ENTRY/entry_points.txt"
fi

export PYTHONPATH="/root/site:$PWD/api:$PWD/server:$PWD/client:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
[ $# -eq 0 ] && exit 0
exec python3 -m "$@"
