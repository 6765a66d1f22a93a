#!/usr/bin/env bash
# Runs the virtbus benchmarks (issue 4, B1–B8) on this machine with one command.
#
#   bench/run.sh            full run (about 5–6 minutes on 2 cores)
#   bench/run.sh --quick    smoke run (well under 2 minutes)
#   bench/run.sh --profile  also re-run each benchmark that missed a goal under
#                           pyinstrument (installed into .venv if missing)
#   bench/run.sh --only B1,B3
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
    if [[ "$arg" == --profile* ]] && ! .venv/bin/python -c 'import pyinstrument' 2>/dev/null; then
        echo "bench: installing pyinstrument into .venv for --profile" >&2
        .venv/bin/python -m pip install -q pyinstrument >&2
    fi
done

export BENCH_COMMAND="bench/run.sh${*:+ $*}"
exec .venv/bin/python -m bench "$@"
