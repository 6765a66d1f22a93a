#!/usr/bin/env bash
# Builds the agent's container image without any registry: the base image comes from
# Debian's apt mirror (debootstrap + docker import), the wheel and its dependencies are
# built here, and the image installs them offline.
#
#   scripts/build-image.sh [--base-only | --base-rootfs] [--tag virtbus-agent:latest]
#
# --base-rootfs only makes the base's root filesystem (debootstrap, no Docker engine
# needed) as a tarball in VIRTBUS_CACHE_DIR, which a later build imports: the test
# command starts it in the background so that the download overlaps the tests.
#
# Environment: VIRTBUS_BASE_IMAGE (virtbus-base:bookworm), DEBIAN_MIRROR
# (http://deb.debian.org/debian), PYTHON (the Python that builds the wheels; the repo's
# .venv by default), VIRTBUS_CACHE_DIR (/var/cache/virtbus). The base is built only when
# missing: `docker rmi` it (and delete the cached tarball) to rebuild.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="${VIRTBUS_BASE_IMAGE:-virtbus-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
TAG="virtbus-agent:latest"
BASE_ONLY=0
ROOTFS_ONLY=0
CACHE_DIR="${VIRTBUS_CACHE_DIR:-/var/cache/virtbus}"
ROOTFS_TAR="$CACHE_DIR/$(printf '%s' "$BASE" | tr ':/' '--').tar"

while [ $# -gt 0 ]; do
    case "$1" in
        --base-only) BASE_ONLY=1 ;;
        --base-rootfs) ROOTFS_ONLY=1 ;;
        --tag) TAG="$2"; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "build-image.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

make_rootfs_tar() (
    # a subshell, so that its EXIT trap removes the scratch root filesystem however it
    # ends (a RETURN trap would outlive the function and fire again at the caller's
    # return, with the local gone); one maker at a time, a second waits and then finds
    # the tarball made
    mkdir -p "$CACHE_DIR"
    exec 9>"$ROOTFS_TAR.lock"
    flock 9
    if [ -s "$ROOTFS_TAR" ]; then
        exit 0
    fi
    command -v debootstrap >/dev/null || {
        echo "build-image.sh: debootstrap is needed to build $BASE (apt-get install debootstrap)" >&2
        exit 1
    }
    rootfs="$(mktemp -d "${TMPDIR:-/tmp}/virtbus-rootfs.XXXXXX")"
    trap 'rm -rf "$rootfs"' EXIT
    echo "building $BASE's root filesystem from $MIRROR" >&2
    # python3 is 3.11 on bookworm; ca-certificates for amqps/TLS peers
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$MIRROR" >&2
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    tar -C "$rootfs" --numeric-owner -cf "$ROOTFS_TAR.partial" .
    mv "$ROOTFS_TAR.partial" "$ROOTFS_TAR"
)

build_base() {
    if docker image inspect "$BASE" >/dev/null 2>&1; then
        return
    fi
    make_rootfs_tar
    docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
        "$ROOTFS_TAR" "$BASE" >&2
}

if [ "$ROOTFS_ONLY" = 1 ]; then
    make_rootfs_tar
    exit 0
fi
build_base
[ "$BASE_ONLY" = 1 ] && exit 0

context="$(mktemp -d /tmp/virtbus-image.XXXXXX)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/wheels"
# the project's wheel (the same as `python -m build` makes) and every dependency's wheel,
# so that the image installs offline
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$context/wheels" "$ROOT" >&2
cp "$ROOT/Dockerfile" "$context/Dockerfile"
docker build --network none --build-arg "BASE=$BASE" --tag "$TAG" "$context" >&2
echo "$TAG"
