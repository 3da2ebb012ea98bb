#!/usr/bin/env bash
# Builds fetchd's container images from docker/Dockerfile.
#
#   scripts/image.sh [--smoke] [TAG]      (TAG defaults to dev)
#
# Images: localhost/fetchd:TAG, the shell-less runtime image (fetchd, the
# libraries it loads, CA certificates, user nonroot 65532; no shell, no
# apt), and localhost/fetchd:TAG-debug, the same plus fetchctl and busybox
# (Dockerfile target debug). The builder is docker or podman when one works
# here, else buildah (installed from Debian if missing; no daemon, chroot
# isolation, the host network for apt). The build stage's base is $BASE
# (debian:bookworm); where it is not present and no registry is reachable,
# it is made first from Debian's packages with debootstrap, trimmed like
# Debian's slim images (no docs, man pages or locales), as
# localhost/debian:bookworm.
#
# --smoke then checks the images: the runtime image's config runs fetchd as
# 65532:65532 with a volume at /var/lib/fetchd; its filesystem has no shell,
# package manager or coreutils, and starting /bin/sh in it fails; it is at
# most FETCHD_IMAGE_MAX_MB (73, 60% of the 122 MB Debian-based image it
# replaced). fetchd started from it with no store flags on a loopback port
# (with that user) answers Health SERVING, for the Jobs service too (the
# default SQLite store in /var/lib/fetchd); a Compute call and a fetch from
# a loopback origin, both driven from outside by the build's fetchctl; and
# the debug image's own fetchctl gets SERVING from it. Prints the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
if [[ ${1:-} == --smoke ]]; then smoke=1; shift; fi
tag=${1:-dev}
image=localhost/fetchd:$tag
debug_image=localhost/fetchd:$tag-debug
max_mb=${FETCHD_IMAGE_MAX_MB:-73}
base=${BASE:-debian:bookworm}

pick_tool() {
  if [[ -n ${FETCHD_IMAGE_TOOL:-} ]]; then echo "$FETCHD_IMAGE_TOOL"; return; fi
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo docker; return; fi
  if command -v podman >/dev/null; then echo podman; return; fi
  echo buildah
}
tool=$(pick_tool)
if [[ $tool == buildah ]] && ! command -v buildah >/dev/null; then
  echo "image: installing buildah" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    buildah >/dev/null
fi
export BUILDAH_ISOLATION=chroot

# image_field IMAGE FIELD: a field of the image's config (User, Entrypoint
# as Go prints a list, Size), the same whichever tool built it.
image_field() {
  local format
  if [[ $tool == buildah ]]; then
    case $2 in
      User) format='{{.OCIv1.Config.User}}' ;;
      Entrypoint) format='{{.OCIv1.Config.Entrypoint}}' ;;
      Volumes) format='{{.OCIv1.Config.Volumes}}' ;;
      # One line per tag of the image: another tag of the same build
      # (an identical tree makes an identical image) must not double it.
      Size) buildah images --format '{{.Size}}' "$1" | head -n 1; return ;;
    esac
    buildah inspect --type image --format "$format" "$1"
  else
    case $2 in
      User) format='{{.Config.User}}' ;;
      Entrypoint) format='{{.Config.Entrypoint}}' ;;
      Volumes) format='{{.Config.Volumes}}' ;;
      Size) format='{{.Size}}' ;;
    esac
    "$tool" image inspect --format "$format" "$1"
  fi
}
have_image() {
  if [[ $tool == buildah ]]; then
    buildah inspect --type image "$1" >/dev/null 2>&1
  else
    "$tool" image inspect "$1" >/dev/null 2>&1
  fi
}

# The base: present, pulled, or made here from Debian's packages.
if ! have_image "$base" && ! "$tool" pull -q "$base" >/dev/null 2>&1; then
  if [[ $tool != buildah ]]; then
    echo "image: cannot get $base with $tool; set BASE, or FETCHD_IMAGE_TOOL=buildah" >&2
    exit 1
  fi
  base=localhost/debian:bookworm
  if ! have_image "$base"; then
    echo "image: making $base with debootstrap (no registry reachable)" >&2
    command -v debootstrap >/dev/null ||
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        debootstrap >/dev/null
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
    # What Debian's slim images leave out, now and for later installs.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$rootfs"/usr/share/{man,info,locale,lintian}/* "$rootfs"/var/cache/apt/* \
      "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
    ctr=$(buildah from scratch)
    cp -a "$rootfs/." "$(buildah mount "$ctr")/"
    buildah umount "$ctr" >/dev/null
    buildah commit -q "$ctr" "$base" >/dev/null
    buildah rm "$ctr" >/dev/null
  fi
fi

echo "image: building $image and $debug_image from $base with $tool" >&2
# build_target TARGET IMAGE. --layers (buildah, podman): the second target
# reuses the build stage the first one compiled (docker caches by default).
build_target() {
  case $tool in
    buildah)
      buildah bud -q --layers --network host --ignorefile docker/.dockerignore \
        --build-arg BASE="$base" --target "$1" -t "$2" -f docker/Dockerfile . >/dev/null ;;
    podman)
      podman build -q --layers --network host --ignorefile docker/.dockerignore \
        --build-arg BASE="$base" --target "$1" -t "$2" -f docker/Dockerfile . >/dev/null ;;
    docker)  # reads docker/Dockerfile.dockerignore (a link to .dockerignore)
      docker build -q --network host --build-arg BASE="$base" --target "$1" \
        -t "$2" -f docker/Dockerfile . >/dev/null ;;
  esac
}
build_target runtime "$image"
build_target debug "$debug_image"
echo "image: $image, $(image_field "$image" Size); $debug_image, $(image_field "$debug_image" Size)" >&2

((smoke)) || exit 0

# --- smoke test --------------------------------------------------------------
fail() { echo "image smoke: FAILED: $*" >&2; exit 1; }
user=$(image_field "$image" User)
entry=$(image_field "$image" Entrypoint)
[[ $user == 65532:65532 ]] || fail "image user is '$user', want 65532:65532"
[[ $entry == '[fetchd]' ]] || fail "entrypoint is $entry, want [fetchd]"
volumes=$(image_field "$image" Volumes)
[[ $volumes == *'/var/lib/fetchd:'* ]] || fail "volumes are '$volumes', want /var/lib/fetchd"
[[ -x build/bin/fetchctl ]] || bash scripts/build.sh release fetchctl >/dev/null

# The size bound, in MB as the tools print them (docker and podman: bytes).
size=$(image_field "$image" Size)
mb=$(awk -v s="$size" 'BEGIN {
  n = s + 0; u = s; sub(/^[0-9.]+ */, "", u)
  if (u == "") n /= 1e6; else if (u == "kB" || u == "KB") n /= 1e3
  else if (u == "GB") n *= 1e3; else if (u != "MB") n = -1
  printf "%.1f", n }')
awk -v m="$mb" -v max="$max_mb" 'BEGIN { exit !(m >= 0 && m <= max) }' ||
  fail "$image is $size ($mb MB), want at most $max_mb MB"

log=$(mktemp)
tmp=$(mktemp -d)
ctr= dbg= pid= origin_pid=
cleanup_smoke() {
  set +e  # best effort; must not change the script's exit status
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  if [[ -n $origin_pid ]]; then kill "$origin_pid" 2>/dev/null; wait "$origin_pid" 2>/dev/null; fi
  if [[ -n $ctr ]]; then buildah umount "$ctr" >/dev/null 2>&1; buildah rm "$ctr" >/dev/null 2>&1; fi
  if [[ -n $dbg ]]; then buildah rm "$dbg" >/dev/null 2>&1; fi
  rm -rf "$log" "$tmp"
}
trap cleanup_smoke EXIT

# No shell, package manager or coreutils: the filesystem, then a run.
rootfs_list() {  # every path in the runtime image, one a line, no leading /
  if [[ $tool == buildah ]]; then
    ctr=$(buildah from -q "$image")
    (cd "$(buildah mount "$ctr")" && find . -mindepth 1 | sed 's,^\./,,')
  else
    local c; c=$("$tool" create "$image")
    "$tool" export "$c" | tar -t | sed 's,/$,,'; "$tool" rm "$c" >/dev/null
  fi
}
rootfs_list >"$tmp/files"
[[ -s $tmp/files ]] || fail "cannot list the image's files"
for f in usr/local/bin/fetchd etc/ssl/certs/ca-certificates.crt etc/passwd etc/nsswitch.conf; do
  grep -qx "$f" "$tmp/files" || fail "no $f in $image"
done
# Nothing in a bin directory but fetchd, and no shell or fetchctl anywhere.
forbidden=$(grep -E '(^|/)s?bin/[^/]+$|(^|/)(busybox|sh|bash|dash|apt-get|fetchctl)$' \
  "$tmp/files" | grep -vx 'usr/local/bin/fetchd' || true)
[[ -z $forbidden ]] || fail "$image holds $(echo $forbidden)"
if [[ $tool == buildah ]]; then
  buildah run "$ctr" -- /bin/sh -c true >/dev/null 2>&1 && fail "/bin/sh runs in $image"
else
  "$tool" run --rm --entrypoint /bin/sh "$image" -c true >/dev/null 2>&1 &&
    fail "/bin/sh runs in $image"
fi

# A loopback origin for the fetch (the image's fetchd is told to allow it).
echo "fetchd-image-smoke" >"$tmp/hello.txt"
(cd "$tmp" && exec python3 -u -m http.server 0 --bind 127.0.0.1 >"$tmp/origin.log" 2>&1) &
origin_pid=$!
for _ in $(seq 100); do
  grep -q 'port [0-9]' "$tmp/origin.log" && break
  sleep 0.1
done
origin_port=$(grep -o 'port [0-9]*' "$tmp/origin.log" | head -1 | cut -d' ' -f2)
[[ -n $origin_port ]] || fail "the loopback origin did not start"

args=(--listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --drain_delay=0
  --allow_cidrs=127.0.0.0/8,::1/128)
case $tool in
  buildah)
    buildah run --user "$user" --network host "$ctr" -- fetchd "${args[@]}" 2>"$log" & ;;
  *)
    "$tool" run --rm --network host "$image" "${args[@]}" 2>"$log" & ;;
esac
pid=$!
for _ in $(seq 300); do
  grep -q '"event":"serving"' "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "fetchd exited"; }
  sleep 0.1
done
port=$(grep -o '"port":[0-9]*' "$log" | head -1 | cut -d: -f2)
[[ -n $port ]] || { cat "$log" >&2; fail "fetchd did not report serving"; }
# The server process, found by its own port, must run as 65532.
server_pid=$(pgrep -f -- "fetchd ${args[*]}" | while read -r p; do
  [[ $(readlink "/proc/$p/exe" 2>/dev/null) == */usr/local/bin/fetchd ]] && echo "$p"; done | head -1)
uid=$(awk '/^Uid:/{print $2}' "/proc/$server_pid/status")
gid=$(awk '/^Gid:/{print $2}' "/proc/$server_pid/status")
[[ $uid == 65532 && $gid == 65532 ]] || fail "fetchd runs as $uid:$gid"
ctl=(build/bin/fetchctl --addr="127.0.0.1:$port")
health=$("${ctl[@]}" health)
[[ $health == *SERVING* && $health != *NOT_SERVING* ]] || fail "health: $health"
# The Jobs service is up only with its store open: the default one, in
# /var/lib/fetchd, which the image lets 65532 write.
jobs=$("${ctl[@]}" health --service=fetchd.v1.Jobs)
[[ $jobs == *SERVING* && $jobs != *NOT_SERVING* ]] || fail "Jobs health: $jobs"
compute=$("${ctl[@]}" compute count_primes --limit=1000)
[[ $compute == *168* ]] || fail "compute count_primes 1000: $compute"
mkdir "$tmp/out"
# By address, and by name: localhost through the image's nsswitch.conf
# and /etc/hosts (glibc's built-in files module; no NSS library to load).
fetched=$("${ctl[@]}" fetch --out_dir="$tmp/out" "http://127.0.0.1:$origin_port/hello.txt" \
  "http://localhost:$origin_port/hello.txt" 2>&1) || fail "fetch: $fetched"
[[ $(grep -c '^200 ' <<<"$fetched") == 2 && $(grep -rlx fetchd-image-smoke "$tmp/out" | wc -l) == 2 ]] ||
  fail "fetch of the loopback origin: $fetched"
# The debug image's own fetchctl (its libraries are the runtime image's).
case $tool in
  buildah)
    dbg=$(buildah from -q "$debug_image")
    dbg_health=$(buildah run --user 65532:65532 --network host "$dbg" -- \
      fetchctl --addr="127.0.0.1:$port" health) ;;
  *)
    dbg_health=$("$tool" run --rm --network host --entrypoint fetchctl "$debug_image" \
      --addr="127.0.0.1:$port" health) ;;
esac
[[ $dbg_health == *SERVING* && $dbg_health != *NOT_SERVING* ]] ||
  fail "the debug image's fetchctl health: $dbg_health"
echo "image smoke: ok ($image $size, at most $max_mb MB, no shell; uid $uid:$gid," \
  "health SERVING, Jobs SERVING (SQLite in /var/lib/fetchd), count_primes(1000) = 168," \
  "fetch 200 from a loopback origin by address and by name; $debug_image's fetchctl: SERVING)" >&2
exit 0
