#!/usr/bin/env bash
# The README's first command: install what is missing, build Release, and run
# fetchd in the foreground with working defaults. Extra args go to fetchd,
# e.g. scripts/run.sh --listen=127.0.0.1:50051 --workers=4
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build
bash scripts/build.sh release >&2
# The SSRF guard stays on: fetchd fetches only public addresses unless told.
case " $* " in
  *" --allow_private_networks"* | *" --allow_cidrs="*) ;;
  *) echo "run.sh: fetchd refuses loopback and private origins by default;" \
    "to fetch from them (a local demo), add --allow_private_networks" \
    "(or --allow_cidrs=127.0.0.0/8 for loopback only)" >&2 ;;
esac
exec build/bin/fetchd "$@"
