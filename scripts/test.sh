#!/usr/bin/env bash
# The whole test suite, in tiers: ruff, mypy (strict), then pytest over
# tests/ — unit, component, integration (real QEMU), e2e, in that order.
# Every tier runs even when an earlier one fails, so one run shows all
# problems; the exit status is non-zero if any tier failed.
#
# Usage: scripts/test.sh [pytest args...]   e.g. scripts/test.sh -k fake_qmp -x
# Env:   HANGAR_TEST_TIMEOUT     per-test timeout in seconds (default 300);
#                                a test's own @pytest.mark.timeout(...) wins.
#        HANGAR_SESSION_TIMEOUT  stop starting new tests after this many seconds
#                                (default 4500: CI is killed at 90 min, and a
#                                stopped run still prints its summary).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

bash scripts/setup.sh
export PATH=$ROOT/.venv/bin:$PATH

failed=()
tier() {
    local name=$1
    shift
    printf '\n=== %s: %s\n' "$name" "$*"
    local rc=0
    "$@" || rc=$?
    if ((rc != 0)); then
        failed+=("$name (exit $rc)")
    fi
    return 0
}

# Test paths, fastest tier first; any other test module, or folder holding
# test modules, under tests/ still runs, after the tiers.
paths=()
for t in unit component integration e2e; do
    [[ -d tests/$t ]] && paths+=("tests/$t")
done
while IFS= read -r p; do
    if [[ -f $p ]] || [[ -n $(find "$p" -name 'test_*.py' -print -quit) ]]; then
        paths+=("$p")
    fi
done < <(find tests -mindepth 1 -maxdepth 1 \( -name 'test_*.py' -o -type d \) \
    ! -name unit ! -name component ! -name integration ! -name e2e \
    ! -name support ! -name __pycache__ | sort)

tier ruff ruff check .
tier mypy mypy
# -p no:cacheprovider: no .pytest_cache in the tree (CI runs in a clean clone).
# -ra: one line per skip/xfail/failure with its reason, above the summary.
# pytest's exit 5 (no tests collected) counts as failure: a suite that ran
# nothing proves nothing.
tier pytest pytest -p no:cacheprovider -ra --strict-markers \
    --timeout="${HANGAR_TEST_TIMEOUT:-300}" \
    --session-timeout="${HANGAR_SESSION_TIMEOUT:-4500}" --durations=10 \
    "${paths[@]}" "$@"

if ((${#failed[@]} > 0)); then
    printf '\ntest.sh: FAILED tiers: %s\n' "${failed[*]}" >&2
    exit 1
fi
