#!/usr/bin/env bash
# Prepare this machine (Debian 12, root) to build and test hangar:
#   1. Debian packages from scripts/apt-packages.txt, only the missing ones;
#   2. .venv built with Debian's /usr/bin/python3;
#   3. Python packages from requirements.lock, then hangar itself (editable).
# Idempotent: when nothing changed, a second run only checks (well under 1 s).
#
# Usage:
#   scripts/setup.sh            install whatever is missing
#   scripts/setup.sh --relock   regenerate requirements.lock from PyPI alone
set -euo pipefail

case ${1:-} in
    "" | --relock) ;;
    *)
        echo "usage: $0 [--relock]" >&2
        exit 2
        ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Several people (and their test runs) share one work tree: serialize
# setups, so two pip installs never write into .venv at once. The lock is
# held on this script's own file, which needs no cleanup.
exec 9<"$ROOT/scripts/setup.sh"
flock 9

# Debian's interpreter, not pyenv's: the venv must not depend on a per-user
# toolchain that a fresh machine or CI may lack.
PY=/usr/bin/python3
VENV=$ROOT/.venv
LOCK=$ROOT/requirements.lock
STAMP=$VENV/.hangar-lock-hash
# Dev tools locked next to pyproject's runtime dependencies.
DEV_TOOLS=(pytest pytest-asyncio pytest-timeout mypy ruff schemathesis)

export DEBIAN_FRONTEND=noninteractive

log() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
    # sudo drops the environment; hand DEBIAN_FRONTEND over explicitly.
    if [[ $EUID -eq 0 ]]; then "$@"; else sudo DEBIAN_FRONTEND="$DEBIAN_FRONTEND" "$@"; fi
}

install_apt_packages() {
    local pkgs=() missing=() p status
    # Strip comments and blanks.
    mapfile -t pkgs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' scripts/apt-packages.txt | grep -v '^$')
    for p in "${pkgs[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [[ $status == "install ok installed" ]] || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        return
    fi
    log "installing Debian packages: ${missing[*]}"
    # update first: a fresh machine's package lists may be empty or stale.
    # Wait for a dpkg lock held by someone else instead of failing at once.
    as_root apt-get -o DPkg::Lock::Timeout=600 update -q
    as_root apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
        "${missing[@]}" </dev/null
}

# Hash of everything that decides the venv's content; when it is unchanged
# since the last successful install, pip is skipped entirely.
inputs_hash() {
    cat "$LOCK" pyproject.toml <("$VENV/bin/python" -VV) | sha256sum | cut -d' ' -f1
}

ensure_venv() {
    # A venv built on another interpreter (e.g. pyenv's) is rebuilt.
    if [[ -x $VENV/bin/python ]] &&
        [[ $(readlink -f "$VENV/bin/python") != "$(readlink -f "$PY")" ]]; then
        log "rebuilding .venv: it was made with $(readlink -f "$VENV/bin/python")"
        rm -rf "$VENV"
    fi
    if [[ ! -x $VENV/bin/python ]]; then
        log "creating .venv with $PY"
        "$PY" -m venv "$VENV"
    fi
}

install_python_packages() {
    local want
    want=$(inputs_hash)
    if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
        return
    fi
    log "installing Python packages from requirements.lock"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$LOCK"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
    # --no-deps hides a dependency added to pyproject.toml but not locked.
    local problems
    if ! problems=$("$VENV/bin/python" -m pip check --disable-pip-version-check 2>&1); then
        printf '%s\n' "$problems" >&2
        log "requirements.lock does not satisfy pyproject.toml: run scripts/setup.sh --relock"
        exit 1
    fi
    # Written last, so an interrupted install is retried next time.
    printf '%s\n' "$want" >"$STAMP"
}

relock() {
    local deps=()
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mapfile -t deps < <("$PY" -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))')
    "$PY" -m venv "$tmp/venv"
    # PyPI alone: ignore this machine's pip config, local wheels, constraints
    # and mirrors, so the lock installs on any fresh machine.
    env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL \
        PIP_CONFIG_FILE=/dev/null \
        "$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check \
        "${deps[@]}" "${DEV_TOOLS[@]}"
    {
        echo "# Pinned Python packages for hangar: pyproject.toml's dependencies plus dev tools"
        echo "# (${DEV_TOOLS[*]}), with every transitive dependency, for $("$PY" -V)."
        echo "# Installed by scripts/setup.sh. Regenerate (from PyPI alone) with:"
        echo "#   scripts/setup.sh --relock"
        echo "# (a scratch venv on /usr/bin/python3, pip install of those with PIP_CONFIG_FILE=/dev/null,"
        echo "# then pip freeze)."
        "$tmp/venv/bin/python" -m pip freeze --disable-pip-version-check
    } >"$LOCK.new"
    mv "$LOCK.new" "$LOCK"
    log "wrote requirements.lock"
}

install_apt_packages
if [[ ${1:-} == --relock ]]; then
    relock
    exit 0
fi
ensure_venv
install_python_packages
