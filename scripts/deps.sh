#!/usr/bin/env bash
# Installs the Debian packages fetchd needs, once; silent when all are there.
#   scripts/deps.sh build   compilers, CMake, gRPC, Protobuf, Abseil, OpenSSL, libcurl,
#                           SQLite and libpq (the job stores),
#                           gumbo, JSON (nlohmann, simdjson), tcmalloc, GoogleTest,
#                           cpp-httplib (the test origin)
#   scripts/deps.sh test    build + clang, its sanitizer and libFuzzer runtimes
#                           (libclang-rt-14-dev: tests/fuzz), PyYAML and kubectl
#                           (the k8s/ manifest test), nghttpd (the h2 test origin),
#                           PostgreSQL (a private server for the jobs tests),
#                           python3-grpcio, Node and npm, and client/node's npm
#                           packages (npm ci: the Python and Node client tests),
#                           python3-protobuf (the docs/api.md generator)
#   scripts/deps.sh bench   build + what bench/ drives: nginx (origin), wrk, Python
#                           aiohttp (seed peer), Go and Node (peers)
set -euo pipefail

build=(cmake ninja-build g++ pkg-config ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libssl-dev nlohmann-json3-dev libsimdjson-dev libcurl4-openssl-dev
  libidn2-dev libsqlite3-dev libpq-dev
  libgumbo-dev libgoogle-perftools-dev
  libgtest-dev libgmock-dev libcpp-httplib-dev)  # tests are in the default build
test=(clang libclang-rt-14-dev python3-yaml nghttp2-server  # nghttpd: the h2 origin
  postgresql  # a private PostgreSQL server for the jobs tests
  python3-grpcio  # client/python; its stubs come from protoc (build deps)
  python3-protobuf)  # scripts/protoc-gen-fetchd-doc: docs/api.md (ApiDoc* tests)
bench=(python3 python3-aiohttp nginx wrk curl bc golang-go nodejs)

wanted=("${build[@]}")
case "${1:-build}" in
  build) ;;
  test)
    wanted+=("${test[@]}")
    # k8s/ tests render with kubectl's kustomize (v5 here); Debian's own
    # client is the fallback where kubectl is missing.
    command -v kubectl >/dev/null || wanted+=(kubernetes-client)
    # client/node: Debian's Node and npm, unless a Node (with its own npm,
    # which conflicts with Debian's) is there already.
    command -v node >/dev/null || wanted+=(nodejs)
    command -v npm >/dev/null || wanted+=(npm) ;;
  bench) wanted+=("${bench[@]}") ;;
  *) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac

missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$pkg")
done
# client/node's packages (@grpc/grpc-js, @grpc/proto-loader), exactly as its
# package-lock.json pins them, into client/node/node_modules (not committed);
# again only when the lock file changed. No install scripts: none is needed.
node_packages() {
  [[ ${1:-build} == test ]] || return 0
  local dir
  dir=$(cd "$(dirname "$0")/../client/node" && pwd)
  [[ $dir/node_modules/.package-lock.json -nt $dir/package-lock.json ]] && return 0
  echo "deps: npm ci in client/node" >&2
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
}
((${#missing[@]} == 0)) && { node_packages "$@"; exit 0; }

sudo=()
[[ $(id -u) == 0 ]] || sudo=(sudo)
echo "deps: installing ${missing[*]}" >&2
# One index refresh per run, and only when something is missing.
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
  --no-install-recommends "${missing[@]}" >/dev/null
node_packages "$@"
