#!/usr/bin/env bash
# CI check for the API: buf lint, buf format, and drift between proto/ and the committed stubs.
#
# Needs buf from npm (`npm install --no-package-lock` at the repo root installs node_modules/.bin/buf, pinned in
# package.json) and grpcio-tools at the version pinned in scripts/gen_proto.sh.
# Environment: BUF (default: node_modules/.bin/buf, else buf on PATH), PYTHON (see gen_proto.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ -z "${BUF:-}" ]]; then
  if [[ -x node_modules/.bin/buf ]]; then BUF=node_modules/.bin/buf
  elif command -v buf >/dev/null 2>&1; then BUF=buf
  else
    echo "check_proto: buf not found; run 'npm install --no-package-lock' at the repo root." >&2
    exit 2
  fi
fi

status=0

echo "check_proto: buf lint"
"$BUF" lint || status=1

echo "check_proto: buf format --diff --exit-code"
if ! "$BUF" format --diff --exit-code; then
  echo "check_proto: .proto files are not formatted; run '$BUF format -w'." >&2
  status=1
fi

echo "check_proto: generated stubs are up to date"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
scripts/gen_proto.sh "$tmp" >/dev/null
# Compare every generated file, in both directions (missing, extra or changed files all fail).
if ! diff -ru --exclude='__pycache__' --exclude='*.pyc' \
  "$tmp/whisperwire/v1" client/whisperwire/v1; then
  echo "check_proto: client/whisperwire/v1 is out of date with proto/;" \
    "run scripts/gen_proto.sh and commit the result." >&2
  status=1
fi

if [[ $status -eq 0 ]]; then echo "check_proto: OK"; fi
exit $status
