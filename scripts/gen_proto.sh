#!/usr/bin/env bash
# Regenerate the Python stubs for proto/whisperwire/v1/*.proto into client/whisperwire/v1/.
#
# Codegen policy: the generated *_pb2.py, *_pb2.pyi and *_pb2_grpc.py files are committed and
# never edited by hand. They are produced by grpcio-tools at exactly GRPCIO_TOOLS_VERSION so
# that scripts/check_proto.sh (run in CI) can regenerate them and fail on any drift.
# After changing a .proto file, run this script and commit the results.
#
# Usage: scripts/gen_proto.sh [OUT_DIR]    (default OUT_DIR: client)
# Environment: PYTHON (default: .venv/bin/python if present, else python3).
set -euo pipefail

GRPCIO_TOOLS_VERSION="1.85.1"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT_DIR="${1:-client}"

have="$("$PYTHON" -c 'from importlib.metadata import version; print(version("grpcio-tools"))' 2>/dev/null || true)"
if [[ "$have" != "$GRPCIO_TOOLS_VERSION" ]]; then
  echo "gen_proto: need grpcio-tools==$GRPCIO_TOOLS_VERSION for $PYTHON, found '${have:-none}'." >&2
  echo "gen_proto: install it with: $PYTHON -m pip install grpcio-tools==$GRPCIO_TOOLS_VERSION" >&2
  exit 2
fi

shopt -s nullglob
protos=(proto/whisperwire/v1/*.proto)
if (( ${#protos[@]} == 0 )); then
  echo "gen_proto: no .proto files under proto/whisperwire/v1" >&2
  exit 2
fi

# Start clean so that stubs of deleted .proto files disappear too.
mkdir -p "$OUT_DIR/whisperwire/v1"
rm -f "$OUT_DIR"/whisperwire/v1/*_pb2.py "$OUT_DIR"/whisperwire/v1/*_pb2.pyi \
  "$OUT_DIR"/whisperwire/v1/*_pb2_grpc.py

# google/protobuf/*.proto come from grpc_tools' bundled includes (added by grpc_tools.protoc).
"$PYTHON" -m grpc_tools.protoc \
  -Iproto \
  --python_out="$OUT_DIR" \
  --pyi_out="$OUT_DIR" \
  --grpc_python_out="$OUT_DIR" \
  "${protos[@]}"

# whisperwire is a PEP 420 namespace package: there must be no __init__.py in whisperwire/v1.
echo "gen_proto: wrote $(ls "$OUT_DIR"/whisperwire/v1/*_pb2*.py* | wc -l) files to $OUT_DIR/whisperwire/v1"
