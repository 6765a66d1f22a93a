#!/usr/bin/env bash
# The virtbus demo, end to end on one machine:
#
#   1. scripts/setup.sh: RabbitMQ, dockerd, the test image, .venv (whatever is missing)
#   2. a host agent "demo1" in the background (log: .demo/agent.log)
#   3. a bounded wait for its demo1.agent.online event (or an answer to host.ping)
#   4. scripts/demo.py: define, start, suspend, resume, shut down and undefine a domain
#      over plain AMQP, printing every command, reply and event; then SIGTERM the
#      agent and show its agent.offline event
#
# Re-runnable: each run starts from an empty state directory and an empty command
# queue.  On any failure the agent is stopped and no container of host demo1 is left.
# Environment: VIRTBUS_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

HOST=demo1
DEMO_DIR="$REPO_ROOT/.demo"
STATE_DIR="$DEMO_DIR/state"
AGENT_LOG="$DEMO_DIR/agent.log"
PID_FILE="$DEMO_DIR/agent.pid"
SUBSCRIBED="$DEMO_DIR/subscribed"
READY_TIMEOUT=60 # seconds until the agent must answer host.ping
STOP_TIMEOUT=45  # seconds for a graceful stop (the agent drains for up to 30 s)
PY="$REPO_ROOT/.venv/bin/python"
AGENT_PID=""
WAITER_PID=""

if [[ -t 1 ]]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
say() { printf '\n%sdemo: %s%s\n' "$BOLD" "$*" "$PLAIN"; }
warn() { printf 'demo: %s\n' "$*" >&2; }

# wait_gone pid seconds -> 0 once the process is gone, 1 if it outlived the bound
wait_gone() {
    local pid="$1" deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

stop_agent() { # SIGTERM, bounded wait, then SIGKILL
    local pid="$1"
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
        warn "agent pid $pid did not stop within ${STOP_TIMEOUT}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || true
    fi
}

# Containers of host demo1 that are still there: the agent should have removed them.
leftovers() {
    command -v docker >/dev/null 2>&1 || return 0
    timeout 15 docker ps -aq --filter "label=virtbus.host=$HOST" 2>/dev/null || true
}

remove_leftovers() {
    local ids
    ids="$(leftovers)"
    [[ -z "$ids" ]] && return 0
    warn "removing containers of host $HOST left behind: $(echo "$ids" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    timeout 30 docker rm -f $ids >/dev/null || warn "docker rm -f failed"
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$WAITER_PID" ]]; then kill -TERM "$WAITER_PID" 2>/dev/null || true; fi
    if [[ -n "$AGENT_PID" ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
        warn "stopping the agent (pid $AGENT_PID)"
        stop_agent "$AGENT_PID"
    fi
    rm -f "$PID_FILE" "$SUBSCRIBED"
    remove_leftovers
    if [[ $rc -ne 0 && -r "$AGENT_LOG" ]]; then
        warn "--- last 30 lines of $AGENT_LOG ---"
        tail -n 30 "$AGENT_LOG" >&2 || true
        warn "demo FAILED (exit $rc)"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ setup --
say "setting up the machine (scripts/setup.sh)"
bash "$REPO_ROOT/scripts/setup.sh"
[[ -x .venv/bin/virtbus ]] || { warn ".venv/bin/virtbus is missing after setup"; exit 1; }

# ---------------------------------------------------- previous run's leftovers --
mkdir -p "$DEMO_DIR"
if [[ -r "$PID_FILE" ]]; then
    old="$(cat "$PID_FILE")"
    if [[ "$old" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null |
        grep -q "virtbus agent --host $HOST"; then
        warn "stopping the agent of an earlier run (pid $old)"
        kill -TERM "$old" 2>/dev/null || true
        wait_gone "$old" "$STOP_TIMEOUT" || kill -KILL "$old" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
fi
remove_leftovers
rm -rf "$STATE_DIR"
rm -f "$SUBSCRIBED"
"$PY" scripts/demo.py --host "$HOST" reset

# ------------------------------------------------------------------ agent --
# The waiter subscribes to demo1.agent.* first, so the agent's online event is seen.
"$PY" scripts/demo.py --host "$HOST" wait --pid-file "$PID_FILE" \
    --subscribed-file "$SUBSCRIBED" --timeout "$READY_TIMEOUT" &
WAITER_PID=$!
for ((i = 0; i < 150; i++)); do # up to 15 s
    [[ -e "$SUBSCRIBED" ]] && break
    kill -0 "$WAITER_PID" 2>/dev/null || break
    sleep 0.1
done
[[ -e "$SUBSCRIBED" ]] || { warn "the readiness waiter did not subscribe"; exit 1; }

say "starting the agent: virtbus agent --host $HOST --state-dir $STATE_DIR --queue-type classic"
.venv/bin/virtbus agent --host "$HOST" --state-dir "$STATE_DIR" --queue-type classic \
    </dev/null >"$AGENT_LOG" 2>&1 &
AGENT_PID=$!
echo "$AGENT_PID" >"$PID_FILE"
echo "agent pid $AGENT_PID, log $AGENT_LOG"
# bounded: the waiter gives up after READY_TIMEOUT seconds
waiter_rc=0
wait "$WAITER_PID" || waiter_rc=$?
WAITER_PID=""
((waiter_rc == 0)) || { warn "the agent did not become ready"; exit 1; }

# ------------------------------------------------------------------- demo --
say "running scripts/demo.py"
demo_rc=0
"$PY" scripts/demo.py --host "$HOST" run --agent-pid "$AGENT_PID" || demo_rc=$?

# The demo sent SIGTERM at its end (unless it failed before that): wait, bounded.
agent_rc=0
if wait_gone "$AGENT_PID" "$STOP_TIMEOUT"; then
    wait "$AGENT_PID" || agent_rc=$?
    echo "agent exited with status $agent_rc"
else
    warn "the agent is still running ${STOP_TIMEOUT}s after SIGTERM"
    agent_rc=1
fi
if ((agent_rc == 0)); then AGENT_PID=""; fi

left="$(leftovers)"
if [[ -n "$left" ]]; then
    warn "containers of host $HOST are still there: $(echo "$left" | tr '\n' ' ')"
    demo_rc=1
fi
if grep -qE ' (WARNING|ERROR|CRITICAL) ' "$AGENT_LOG"; then
    warn "the agent logged warnings or errors:"
    grep -E ' (WARNING|ERROR|CRITICAL) ' "$AGENT_LOG" >&2 || true
fi
echo "agent log: $AGENT_LOG"
if ((demo_rc != 0 || agent_rc != 0)); then
    exit 1
fi
say "done"
