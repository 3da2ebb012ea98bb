#!/usr/bin/env bash
# Builds fetchd's container image from docker/Dockerfile.
#
#   scripts/image.sh [--smoke] [TAG]      (TAG defaults to dev)
#
# Image: localhost/fetchd:TAG. The builder is docker or podman when one
# works here, else buildah (installed from Debian if missing; no daemon,
# chroot isolation, the host network for apt). The base is $BASE
# (debian:bookworm); where it is not present and no registry is reachable,
# it is made first from Debian's packages with debootstrap, trimmed like
# Debian's slim images (no docs, man pages or locales), as
# localhost/debian:bookworm.
#
# --smoke then checks the image: its config runs fetchd as 65532:65532 with
# a volume at /var/lib/fetchd, and fetchd started from it with no store
# flags on a loopback port (with that user) answers Health SERVING, for the
# Jobs service too (the default SQLite store in /var/lib/fetchd), and a
# Compute call from the host's fetchctl. Prints the image size.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
if [[ ${1:-} == --smoke ]]; then smoke=1; shift; fi
tag=${1:-dev}
image=localhost/fetchd:$tag
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
      Size) buildah images --format '{{.Size}}' "$1"; return ;;
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

echo "image: building $image from $base with $tool" >&2
case $tool in
  buildah)
    buildah bud -q --network host --ignorefile docker/.dockerignore \
      --build-arg BASE="$base" -t "$image" -f docker/Dockerfile . >/dev/null ;;
  podman)
    podman build -q --network host --ignorefile docker/.dockerignore \
      --build-arg BASE="$base" -t "$image" -f docker/Dockerfile . >/dev/null ;;
  docker)  # reads docker/Dockerfile.dockerignore (a link to .dockerignore)
    docker build -q --network host --build-arg BASE="$base" -t "$image" \
      -f docker/Dockerfile . >/dev/null ;;
esac
echo "image: $image, $(image_field "$image" Size)" >&2

((smoke)) || exit 0

# --- smoke test --------------------------------------------------------------
fail() { echo "image smoke: FAILED: $*" >&2; exit 1; }
user=$(image_field "$image" User)
entry=$(image_field "$image" Entrypoint)
[[ $user == 65532:65532 ]] || fail "image user is '$user', want 65532:65532"
[[ $entry == '[fetchd]' ]] || fail "entrypoint is $entry, want [fetchd]"
volumes=$(image_field "$image" Volumes)
[[ $volumes == *'/var/lib/fetchd:'* ]] || fail "volumes are '$volumes', want /var/lib/fetchd"
[[ -x build/bin/fetchctl ]] || bash scripts/build.sh release >/dev/null

log=$(mktemp)
ctr=
cleanup_smoke() {
  set +e  # best effort; must not change the script's exit status
  if [[ -n ${pid:-} ]]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  if [[ -n $ctr ]]; then buildah rm "$ctr" >/dev/null 2>&1; fi
  rm -f "$log"
}
trap cleanup_smoke EXIT
args=(--listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --drain_delay=0)
case $tool in
  buildah)
    ctr=$(buildah from -q "$image")
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
health=$(build/bin/fetchctl --addr="127.0.0.1:$port" health)
[[ $health == *SERVING* && $health != *NOT_SERVING* ]] || fail "health: $health"
# The Jobs service is up only with its store open: the default one, in
# /var/lib/fetchd, which the image lets 65532 write.
jobs=$(build/bin/fetchctl --addr="127.0.0.1:$port" health --service=fetchd.v1.Jobs)
[[ $jobs == *SERVING* && $jobs != *NOT_SERVING* ]] || fail "Jobs health: $jobs"
compute=$(build/bin/fetchctl --addr="127.0.0.1:$port" compute count_primes --limit=1000)
[[ $compute == *168* ]] || fail "compute count_primes 1000: $compute"
echo "image smoke: ok ($image, uid $uid:$gid, health SERVING, Jobs SERVING (SQLite in /var/lib/fetchd), count_primes(1000) = 168)" >&2
exit 0
