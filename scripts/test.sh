#!/usr/bin/env bash
# The project's test command: bring the machine up (scripts/setup.sh), lint,
# type-check, build the documentation site, then run pytest.  Extra arguments are
# forwarded to pytest.
# CI is passed through unchanged (tests fail instead of skipping when CI=true).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

log() { printf 'test: %s\n' "$*" >&2; }
die() { printf 'test: FAILED: %s\n' "$*" >&2; exit 1; }

bash "$REPO_ROOT/scripts/setup.sh" >&2 || die "scripts/setup.sh"

# The container image's Debian base takes minutes to download (debootstrap) on a fresh
# machine; the image's tests run last (tests/conftest.py), so it overlaps the suite.
prefetch=""
if [[ $# -eq 0 && $EUID -eq 0 ]] && command -v debootstrap >/dev/null &&
    ! docker image inspect "${VIRTBUS_BASE_IMAGE:-virtbus-base:bookworm}" >/dev/null 2>&1; then
    log "making the image's base in the background (log: /tmp/virtbus-base-rootfs.log)"
    setsid bash "$REPO_ROOT/scripts/build-image.sh" --base-rootfs >/tmp/virtbus-base-rootfs.log 2>&1 &
    prefetch=$!
    trap '[[ -n $prefetch ]] && kill -- -"$prefetch" 2>/dev/null || true' EXIT
fi

[[ -x .venv/bin/pytest ]] || die ".venv is not set up (is pyproject.toml present with a [dev] extra?)"

dirs=()
for d in agent schemas tests bench scripts; do
    if [[ -d "$d" ]]; then dirs+=("$d"); fi
done

if [[ ${#dirs[@]} -gt 0 ]]; then
    log "ruff check ${dirs[*]}"
    .venv/bin/ruff check "${dirs[@]}" || die "ruff check"
    log "ruff format --check ${dirs[*]}"
    .venv/bin/ruff format --check "${dirs[@]}" || die "ruff format --check"
else
    log "no source directories to lint"
fi

log "mypy"
.venv/bin/mypy || die "mypy"

# The documentation site (mkdocs.yml, docs/): a broken link, a missing page or a wire
# reference that no longer matches schemas/ fails here. Built into a temporary directory.
log "mkdocs build --strict"
site_dir="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$site_dir" ||
    { rm -rf "$site_dir"; die "mkdocs build --strict"; }
rm -rf "$site_dir"

log "pytest $*"
rc=0
.venv/bin/pytest --durations=15 "$@" || rc=$?
case $rc in
    0) log "all passed" ;;
    5) log "FAILED: pytest collected no tests (exit 5)"; exit 5 ;;
    *) log "FAILED: pytest (exit $rc)"; exit "$rc" ;;
esac
exit "$rc"
