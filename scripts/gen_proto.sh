#!/usr/bin/env bash
# Regenerate the Python stubs for proto/whisperwire/v1/*.proto into api/whisperwire/v1/.
#
# Codegen policy: the generated *_pb2.py, *_pb2_grpc.py and their typed *.pyi stubs are
# committed and never edited by hand. grpcio-tools writes the modules and mypy-protobuf the
# stubs (so that the gRPC stub and servicer classes are typed too), each at exactly the version
# pinned below, so that scripts/check_proto.sh (run in CI) can regenerate them and fail on any
# drift. After changing a .proto file, run this script and commit the results.
#
# Usage: scripts/gen_proto.sh [OUT_DIR]    (default OUT_DIR: api)
# Environment: PYTHON (default: .venv/bin/python if present, else python3).
set -euo pipefail

GRPCIO_TOOLS_VERSION="1.85.1"
MYPY_PROTOBUF_VERSION="5.1.0"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT_DIR="${1:-api}"

require_version() {  # distribution, pinned version
  local have
  have="$("$PYTHON" -c "from importlib.metadata import version; print(version('$1'))" 2>/dev/null || true)"
  if [[ "$have" != "$2" ]]; then
    echo "gen_proto: need $1==$2 for $PYTHON, found '${have:-none}'." >&2
    echo "gen_proto: install it with: $PYTHON -m pip install $1==$2" >&2
    exit 2
  fi
}
require_version grpcio-tools "$GRPCIO_TOOLS_VERSION"
require_version mypy-protobuf "$MYPY_PROTOBUF_VERSION"

shopt -s nullglob
protos=(proto/whisperwire/v1/*.proto)
if (( ${#protos[@]} == 0 )); then
  echo "gen_proto: no .proto files under proto/whisperwire/v1" >&2
  exit 2
fi

# Start clean so that stubs of deleted .proto files disappear too.
mkdir -p "$OUT_DIR/whisperwire/v1"
rm -f "$OUT_DIR"/whisperwire/v1/*_pb2.py "$OUT_DIR"/whisperwire/v1/*_pb2_grpc.py \
  "$OUT_DIR"/whisperwire/v1/*.pyi

# protoc plugins are executables: mypy-protobuf's sit beside the interpreter that has it.
bin_dir="$("$PYTHON" -c 'import sys, sysconfig; print(sysconfig.get_path("scripts"))')"

# google/protobuf/*.proto come from grpc_tools' bundled includes (added by grpc_tools.protoc).
"$PYTHON" -m grpc_tools.protoc \
  -Iproto \
  --plugin=protoc-gen-mypy="$bin_dir/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$bin_dir/protoc-gen-mypy_grpc" \
  --python_out="$OUT_DIR" \
  --grpc_python_out="$OUT_DIR" \
  --mypy_out="$OUT_DIR" \
  --mypy_grpc_out="$OUT_DIR" \
  "${protos[@]}"

# whisperwire is a PEP 420 namespace package: there must be no __init__.py in whisperwire/v1.
echo "gen_proto: wrote $(ls "$OUT_DIR"/whisperwire/v1/*_pb2*.py* | wc -l) files to $OUT_DIR/whisperwire/v1"
