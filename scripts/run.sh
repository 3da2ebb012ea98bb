#!/usr/bin/env bash
# The README's first command: install what is missing, build Release, and run
# fetchd in the foreground with working defaults. Extra args go to fetchd,
# e.g. scripts/run.sh --listen=127.0.0.1:50051 --workers=4
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build
bash scripts/build.sh release >&2
exec build/bin/fetchd "$@"
