#!/usr/bin/env bash
# The README's first command: install what is missing, build Release, and run
# fetchd in the foreground with working defaults. Extra args go to fetchd,
# e.g. scripts/run.sh --listen=127.0.0.1:50051 --workers=4
set -euo pipefail
cd "$(dirname "$0")/.."
# FETCHD_DRY_RUN=1 prints the build commands and fetchd's command line
# instead (tests/scripts/run_sh_test.sh).
dry=${FETCHD_DRY_RUN:-}
if [[ -n $dry ]]; then echo "bash scripts/deps.sh build"; else bash scripts/deps.sh build; fi
# Only what this script runs (and fetchctl, to call it): a newcomer's first
# run compiles neither the tests nor the benchmarks. Same build/ and cache as
# scripts/test.sh, which builds the rest later.
bash scripts/build.sh release fetchd fetchctl >&2
# The SSRF guard stays on: fetchd fetches only public addresses unless told.
case " $* " in
  *" --allow_private_networks"* | *" --allow_cidrs="*) ;;
  *) echo "run.sh: fetchd refuses loopback and private origins by default;" \
    "to fetch from them (a local demo), add --allow_private_networks" \
    "(or --allow_cidrs=127.0.0.0/8 for loopback only)" >&2 ;;
esac
if [[ -n $dry ]]; then echo "exec build/bin/fetchd $*"; exit 0; fi
exec build/bin/fetchd "$@"
