#!/usr/bin/env bash
# Prometheus lifecycle of ./dev (run by `./dev test`): `./dev monitoring up`
# starts a real Prometheus that answers and loads ops/prometheus/prometheus.yml
# (its weir-run and weir-sink jobs); a second `up` starts nothing (same pid,
# fast); `./dev monitoring down` stops it (no process left). Kafka and
# PostgreSQL are not touched. A Prometheus that ran before is started again
# at the end.
set -euo pipefail

# pid_alive, now_ms; ROOT
# shellcheck source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
DEV="$ROOT/dev"
PID_FILE="$ROOT/.cache/prometheus/prometheus.pid"
PORT="${WEIR_PROMETHEUS_PORT:-9090}"

fail() { echo "dev_monitoring: FAIL: $*" >&2; exit 1; }
info() { echo "dev_monitoring: $*"; }

was_running=0
[[ -f "$PID_FILE" ]] && pid_alive "$(cat "$PID_FILE")" && was_running=1
restore() { ((was_running)) && "$DEV" monitoring up >/dev/null; return 0; }
trap restore EXIT

"$DEV" monitoring down >/dev/null
"$DEV" monitoring up >/dev/null || fail "./dev monitoring up failed"
pid="$(cat "$PID_FILE")"
pid_alive "$pid" || fail "no Prometheus process after up (pid file says '$pid')"
curl -fsS "http://127.0.0.1:$PORT/-/ready" >/dev/null || fail "Prometheus does not answer on :$PORT"
jobs="$(curl -fsS "http://127.0.0.1:$PORT/api/v1/status/config" | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["yaml"])')"
for job in weir-run weir-sink; do
  grep -q "job_name: $job" <<<"$jobs" || fail "the running Prometheus has no job $job"
done
info "up: Prometheus pid $pid answers with the weir-run and weir-sink jobs"

t0="$(now_ms)"
"$DEV" monitoring up >/dev/null || fail "second ./dev monitoring up failed"
took=$(($(now_ms) - t0))
[[ "$(cat "$PID_FILE")" == "$pid" ]] || fail "second up started another Prometheus"
((took < 5000)) || fail "second up took ${took} ms"
info "second up: same pid, ${took} ms"

"$DEV" monitoring down >/dev/null || fail "./dev monitoring down failed"
for _ in $(seq 1 50); do pid_alive "$pid" || break; sleep 0.1; done
pid_alive "$pid" && fail "Prometheus (pid $pid) still runs after down"
[[ -e "$PID_FILE" ]] && fail "pid file left behind"
info "down: no Prometheus process left"
