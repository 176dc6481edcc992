#!/usr/bin/env bash
# CI check for the API: buf lint, buf format, buf breaking against main, and drift between proto/
# and the committed stubs.
#
# Needs buf from npm (`npm install --no-package-lock` at the repo root installs node_modules/.bin/buf, pinned in
# package.json) and grpcio-tools and mypy-protobuf at the versions pinned in scripts/gen_proto.sh.
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

echo "check_proto: buf breaking against main"
# The main branch as this clone knows it: the local branch, else the remote-tracking one (a CI
# checkout of a pull request may have only that). In a worktree .git is a file, so buf is
# pointed at the repository's common git directory.
if ! git_dir="$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null)"; then
  echo "check_proto: not a git checkout; cannot compare with main." >&2
  status=1
elif git rev-parse --verify --quiet refs/heads/main >/dev/null; then
  "$BUF" breaking --against "$git_dir#branch=main" || status=1
elif git rev-parse --verify --quiet refs/remotes/origin/main >/dev/null; then
  "$BUF" breaking --against "$git_dir#ref=refs/remotes/origin/main" || status=1
else
  echo "check_proto: no main branch (local or origin/main) to compare with; fetch it first." >&2
  status=1
fi

echo "check_proto: generated stubs are up to date"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Quiet unless it fails (mypy-protobuf names every file it writes on stderr).
if ! generated="$(scripts/gen_proto.sh "$tmp" 2>&1)"; then
  echo "$generated" >&2
  exit 1
fi
# Compare every generated file, in both directions (missing, extra or changed files all fail).
if ! diff -ru --exclude='__pycache__' --exclude='*.pyc' \
  "$tmp/whisperwire/v1" api/whisperwire/v1; then
  echo "check_proto: api/whisperwire/v1 is out of date with proto/;" \
    "run scripts/gen_proto.sh and commit the result." >&2
  status=1
fi

if [[ $status -eq 0 ]]; then echo "check_proto: OK"; fi
exit $status
