#!/usr/bin/env bash
# The API gate (CI runs it through ctest: tests/api/buf_test.sh).
#   scripts/buf.sh lint              buf lint, STANDARD rules (protos/buf.yaml)
#   scripts/buf.sh breaking [REF]    buf breaking against REF's protos: by
#                                    default the last release tag (v*), or
#                                    HEAD~1 until a tag exists
#   scripts/buf.sh path              print the buf binary (installed if missing)
# buf comes from npm (@bufbuild/buf ships its binary in the package), into
# FETCHD_TOOLS (default ~/.cache/fetchd/tools).
set -euo pipefail
cd "$(dirname "$0")/.."
readonly buf_version=1.75.0

buf_bin() {
  local tools="${FETCHD_TOOLS:-${HOME:-/root}/.cache/fetchd/tools}"
  local bin="$tools/node_modules/.bin/buf"
  if [[ ! -x "$bin" ]] || [[ "$("$bin" --version 2>/dev/null)" != "$buf_version" ]]; then
    command -v npm >/dev/null || { echo "buf.sh: npm is missing: scripts/deps.sh test installs it" >&2; exit 1; }
    mkdir -p "$tools"
    # ctest runs ApiBuf and the ApiDoc* tests at once: one installs, the
    # others wait for it (two npm installs into one prefix can clash).
    (
      flock 9
      if [[ ! -x "$bin" ]] || [[ "$("$bin" --version 2>/dev/null)" != "$buf_version" ]]; then
        npm install --silent --no-audit --no-fund --prefix "$tools" \
          "@bufbuild/buf@$buf_version" >&2
      fi
    ) 9>"$tools/.install.lock"
  fi
  echo "$bin"
}

baseline_ref() {
  local tag
  tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null || true)
  if [[ -n "$tag" ]]; then echo "$tag"; else echo "HEAD~1"; fi
}

case "${1:-}" in
  path) buf_bin ;;
  lint) (cd protos && "$(buf_bin)" lint) && echo "buf lint: clean (STANDARD)" ;;
  breaking)
    ref="${2:-$(baseline_ref)}"
    if ! git rev-parse -q --verify "$ref^{commit}" >/dev/null; then
      echo "buf breaking: no $ref to compare with (a shallow or one-commit clone): skipped"
      exit 0
    fi
    # Before buf.yaml existed there was no API contract to keep.
    if ! git cat-file -e "$ref:protos/buf.yaml" 2>/dev/null; then
      echo "buf breaking: $ref predates protos/buf.yaml: nothing to compare with"
      exit 0
    fi
    base=$(mktemp -d)
    trap 'rm -rf "$base"' EXIT
    git archive "$ref" protos | tar -x -C "$base"
    (cd protos && "$(buf_bin)" breaking --against "$base/protos") &&
      echo "buf breaking: no breaking change against $ref ($(git rev-parse --short "$ref"))"
    ;;
  *) echo "usage: $0 lint | breaking [REF] | path" >&2; exit 2 ;;
esac
