#!/usr/bin/env bash
# Runs the virtbus benchmarks (issues 4 and 15) on this machine with one command.
#
#   bench/run.sh            full run (about 20 minutes on a quiet 2-core machine)
#   bench/run.sh --quick    smoke run (about 4 minutes)
#   bench/run.sh --profile  also re-run each benchmark that missed a goal under
#                           pyinstrument (installed into .venv if missing)
#   bench/run.sh --only B1,B3
#   bench/run.sh --publish  full run with --profile that becomes the published one:
#                           bench/published/ (results + profiles of misses) and the
#                           tables of docs/benchmarks.md and bench/SCALING.md; commit them
#
# Prepares the machine first (scripts/setup.sh: RabbitMQ, dockerd, the test image,
# .venv), then runs `python -m bench`. The report goes to standard output and to
# bench/results/latest.md; everything measured goes to bench/results/<timestamp>.json.
# Progress and the setup's own output go to standard error. Set BENCH_SKIP_SETUP=1 to
# skip the setup step on a machine that is already prepared.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ "${BENCH_SKIP_SETUP:-0}" != 1 ]]; then
    scripts/setup.sh >&2
fi

for arg in "$@"; do
    if [[ "$arg" == --profile* || "$arg" == --publish ]] && ! .venv/bin/python -c 'import pyinstrument' 2>/dev/null; then
        echo "bench: installing pyinstrument into .venv for --profile" >&2
        .venv/bin/python -m pip install -q pyinstrument >&2
    fi
done

export BENCH_COMMAND="bench/run.sh${*:+ $*}"
exec .venv/bin/python -m bench "$@"
