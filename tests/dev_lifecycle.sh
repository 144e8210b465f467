#!/usr/bin/env bash
# Lifecycle test for ./dev (run by `./dev test` after cargo test):
#   1. a second `./dev up` is fast (< 15 s) and starts nothing new (same pids);
#   2. `./dev down` leaves no Kafka / PostgreSQL process of ours behind;
#   3. `./dev up` brings both back and they answer (metadata request, SQL over
#      TCP with password auth, the broker's PROXIED listener accepts
#      connections, its SASL_SSL and mTLS listeners complete a TLS
#      handshake with the test CA). Services are left running at the end.
# Also: a running broker whose server.properties is not the one this ./dev
# writes (an older ./dev's) makes `./dev up` fail, telling to run
# `./dev down && ./dev up`, without restarting it.
# If the 3-node cluster (`./dev up --brokers 3`) runs, a second
# `./dev up --brokers 3` starts nothing and `./dev down` stops it too (it is
# not started again).
set -euo pipefail

# pid_alive, now_ms, pg_bindir; ROOT
# shellcheck source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$ROOT"
DEV="$ROOT/dev"

KAFKA_PID_FILE="$ROOT/.cache/kafka/kafka.pid"
KAFKA_PROPS="$ROOT/.cache/kafka/server.properties"
KAFKA3_DIR="$ROOT/.cache/kafka3"
PG_DATA="$ROOT/.cache/pg/data"
PG_PID_FILE="$PG_DATA/postmaster.pid"
WARM_UP_LIMIT_MS=15000

eval "$("$DEV" env)" # WEIR_BOOTSTRAP, WEIR_PROXIED_LISTENER, WEIR_PG_URL

STAGE="start"
STOPPED_BY_US=0
LOG="$(mktemp -t weir-dev-lifecycle.XXXXXX)"

fail() {
  echo "dev_lifecycle: FAIL [$STAGE]: $*" >&2
  if [[ -s "$LOG" ]]; then
    echo "---- output of the last ./dev call ----" >&2
    tail -n 40 "$LOG" >&2
    echo "---------------------------------------" >&2
  fi
  exit 1
}
info() { echo "dev_lifecycle: $*"; }

cleanup() {
  local rc=$?
  # Never leave the shared services down because this test failed half-way.
  if ((rc != 0 && STOPPED_BY_US)); then
    echo "dev_lifecycle: restoring services with ./dev up after failure" >&2
    "$DEV" up >/dev/null 2>&1 || echo "dev_lifecycle: ./dev up during cleanup failed too" >&2
  fi
  rm -f "$LOG"
}
trap cleanup EXIT

read_pid() { # file -> first line if it is a number
  local p=""
  [[ -f "$1" ]] && p="$(head -n1 "$1" 2>/dev/null || true)"
  [[ "$p" =~ ^[0-9]+$ ]] && echo "$p" || true
}

# Pid from `./dev status` for a service ("kafka" / "postgres"), empty if stopped.
status_pid() {
  "$DEV" status 2>/dev/null | awk -v s="$1" '$1 == s && $2 == "running" { print $4 }'
}

PSQL="$(pg_bindir || true)/psql"
[[ -x "$PSQL" ]] || PSQL="$(command -v psql || true)"
[[ -x "$PSQL" ]] || fail "psql not found"

# Our processes: pids from the pid files plus anything whose command line
# names our data paths (catches strays a pid file no longer knows about).
our_procs() {
  local p
  for p in $( {
    pgrep -f -- "kafka.Kafka $KAFKA_PROPS" || true
    pgrep -f -- "kafka.Kafka $KAFKA3_DIR/" || true
    pgrep -f -- "-D $PG_DATA" || true
  } | sort -u); do
    pid_alive "$p" && echo "$p"
  done
  return 0
}

assert_answering() {
  local what="$1"
  local status
  status="$("$DEV" status)" || fail "./dev status failed ($what)"
  echo "$status" | sed 's/^/    /'
  grep -q '^kafka .* running ' <<<"$status" || fail "kafka not running ($what)"
  grep -q 'NOT answering' <<<"$status" && fail "kafka is not answering metadata requests ($what)"
  grep -q '^postgres .* running ' <<<"$status" || fail "postgres not running ($what)"
  python3 "$ROOT/scripts/kafka/kafka_ping.py" "$WEIR_BOOTSTRAP" 10 >/dev/null \
    || fail "Kafka at $WEIR_BOOTSTRAP did not answer a metadata request ($what)"
  (exec 3<>"/dev/tcp/${WEIR_PROXIED_LISTENER%:*}/${WEIR_PROXIED_LISTENER##*:}") 2>/dev/null \
    || fail "the broker's PROXIED listener $WEIR_PROXIED_LISTENER does not accept connections ($what)"
  # The secured listeners speak TLS with the throwaway CA's certificate
  # (weir's use of them is tests/secure_kafka.rs).
  local l
  for l in "$WEIR_BOOTSTRAP_SASL_SSL" "$WEIR_BOOTSTRAP_MTLS"; do
    openssl s_client -connect "$l" -CAfile "$WEIR_TLS_DIR/ca.pem" -verify_return_error \
      -cert "$WEIR_TLS_DIR/client.pem" -key "$WEIR_TLS_DIR/client.key" </dev/null >/dev/null 2>&1 \
      || fail "the broker's TLS listener $l does not complete a handshake with the test CA ($what)"
  done
  local one
  one="$("$PSQL" -X -tA "$WEIR_PG_URL" -c 'select 1' 2>&1)" \
    || fail "psql to $WEIR_PG_URL failed ($what): $one"
  [[ "$one" == 1 ]] || fail "psql returned '$one' instead of 1 ($what)"
}

# ---------------------------------------------------------------------------
STAGE="initial up"
if [[ -z "$(status_pid kafka)" || -z "$(status_pid postgres)" ]]; then
  info "services not both running; starting them first"
  "$DEV" up >"$LOG" 2>&1 || fail "initial ./dev up failed"
fi
assert_answering "before the test"

kafka_pid="$(read_pid "$KAFKA_PID_FILE")"
pg_pid="$(read_pid "$PG_PID_FILE")"
[[ -n "$kafka_pid" ]] || fail "no pid in $KAFKA_PID_FILE"
[[ -n "$pg_pid" ]] || fail "no pid in $PG_PID_FILE"
[[ "$(status_pid kafka)" == "$kafka_pid" ]] || fail "./dev status kafka pid '$(status_pid kafka)' != pid file $kafka_pid"
[[ "$(status_pid postgres)" == "$pg_pid" ]] || fail "./dev status postgres pid '$(status_pid postgres)' != pid file $pg_pid"
pg_children="$(pgrep -P "$pg_pid" | tr '\n' ' ' || true)"
info "running: kafka pid $kafka_pid, postgres pid $pg_pid (children: ${pg_children:-none})"
kafka3_pids="" # nodes of the 3-node cluster, if it runs
for n in 1 2 3; do
  p="$(read_pid "$KAFKA3_DIR/node$n/kafka.pid")"
  if [[ -n "$p" ]] && pid_alive "$p"; then kafka3_pids+="$p "; fi
done
[[ -n "$kafka3_pids" ]] && info "3-node cluster running: pids $kafka3_pids"

# ---------------------------------------------------------------------------
STAGE="warm up"
t0="$(now_ms)"
"$DEV" up >"$LOG" 2>&1 || fail "second ./dev up failed"
took=$(($(now_ms) - t0))
info "warm ./dev up took ${took} ms"
((took < WARM_UP_LIMIT_MS)) || fail "warm ./dev up took ${took} ms (limit ${WARM_UP_LIMIT_MS} ms)"
grep -q 'fetching Kafka jars' "$LOG" && fail "warm ./dev up ran Maven again"
grep -q 'initialising PostgreSQL' "$LOG" && fail "warm ./dev up ran initdb again"
[[ "$(read_pid "$KAFKA_PID_FILE")" == "$kafka_pid" ]] || fail "kafka pid changed: $kafka_pid -> $(read_pid "$KAFKA_PID_FILE")"
[[ "$(read_pid "$PG_PID_FILE")" == "$pg_pid" ]] || fail "postgres pid changed: $pg_pid -> $(read_pid "$PG_PID_FILE")"
pid_alive "$kafka_pid" || fail "kafka pid $kafka_pid died during warm up"
pid_alive "$pg_pid" || fail "postgres pid $pg_pid died during warm up"
grep -q 'WEIR_BOOTSTRAP=' "$LOG" || fail "./dev up did not print WEIR_BOOTSTRAP"
grep -q 'WEIR_PG_URL=' "$LOG" || fail "./dev up did not print WEIR_PG_URL"
if [[ "$(wc -w <<<"$kafka3_pids")" == 3 ]]; then
  t0="$(now_ms)"
  "$DEV" up --brokers 3 >"$LOG" 2>&1 || fail "second ./dev up --brokers 3 failed"
  info "warm ./dev up --brokers 3 took $(($(now_ms) - t0)) ms"
  grep -q 'already running' "$LOG" || fail "warm ./dev up --brokers 3 did not find the cluster running"
  grep -q 'WEIR_BOOTSTRAP3=' "$LOG" || fail "./dev up --brokers 3 did not print WEIR_BOOTSTRAP3"
  now_pids=""
  for n in 1 2 3; do now_pids+="$(read_pid "$KAFKA3_DIR/node$n/kafka.pid") "; done
  [[ "$now_pids" == "$kafka3_pids" ]] || fail "3-node cluster pids changed: $kafka3_pids -> $now_pids"
fi

# ---------------------------------------------------------------------------
STAGE="stale server.properties"
# As if the broker had been started by an older ./dev: its file differs.
cp "$KAFKA_PROPS" "$KAFKA_PROPS.lifecycle"
echo "# changed by tests/dev_lifecycle.sh" >>"$KAFKA_PROPS"
if "$DEV" up >"$LOG" 2>&1; then
  mv "$KAFKA_PROPS.lifecycle" "$KAFKA_PROPS"
  fail "./dev up succeeded with a broker started on another server.properties"
fi
mv "$KAFKA_PROPS.lifecycle" "$KAFKA_PROPS"
grep -qF './dev down && ./dev up' "$LOG" || fail "./dev up did not say to run ./dev down && ./dev up"
[[ "$(read_pid "$KAFKA_PID_FILE")" == "$kafka_pid" ]] || fail "kafka pid changed: $kafka_pid -> $(read_pid "$KAFKA_PID_FILE")"
pid_alive "$kafka_pid" || fail "./dev up stopped the broker (pid $kafka_pid)"
"$DEV" up >"$LOG" 2>&1 || fail "./dev up failed with the file restored"

# ---------------------------------------------------------------------------
STAGE="down"
STOPPED_BY_US=1
t0="$(now_ms)"
"$DEV" down >"$LOG" 2>&1 || fail "./dev down failed"
info "./dev down took $(($(now_ms) - t0)) ms"
# Processes may need a moment to be reaped after the parent saw them exit.
for _ in $(seq 1 50); do
  left=""
  for p in $kafka_pid $pg_pid $pg_children $kafka3_pids; do pid_alive "$p" && left+="$p "; done
  strays="$(our_procs | tr '\n' ' ')"
  [[ -z "$left" && -z "${strays// /}" ]] && break
  sleep 0.1
done
[[ -z "$left" ]] || fail "processes still alive after ./dev down: $left"
[[ -z "${strays// /}" ]] || fail "processes matching our data paths after ./dev down: $strays ($(ps -o pid=,args= -p "${strays// /,}" 2>/dev/null | cut -c1-200))"
[[ ! -f "$KAFKA_PID_FILE" ]] || fail "$KAFKA_PID_FILE still exists after ./dev down"
[[ ! -f "$PG_PID_FILE" ]] || fail "$PG_PID_FILE still exists after ./dev down"
for n in 1 2 3; do
  [[ ! -f "$KAFKA3_DIR/node$n/kafka.pid" ]] || fail "$KAFKA3_DIR/node$n/kafka.pid still exists after ./dev down"
done
status="$("$DEV" status)" || fail "./dev status failed after down"
grep -q '^kafka  *stopped' <<<"$status" || fail "./dev status does not say kafka stopped: $status"
grep -q '^postgres  *stopped' <<<"$status" || fail "./dev status does not say postgres stopped: $status"
# A second down is a no-op.
"$DEV" down >"$LOG" 2>&1 || fail "second ./dev down failed"

# ---------------------------------------------------------------------------
STAGE="up again"
t0="$(now_ms)"
"$DEV" up >"$LOG" 2>&1 || fail "./dev up after down failed"
STOPPED_BY_US=0
info "./dev up after down took $(($(now_ms) - t0)) ms"
grep -q 'fetching Kafka jars' "$LOG" && fail "./dev up after down ran Maven again (jar cache not reused)"
grep -q 'formatting Kafka storage' "$LOG" && fail "./dev up after down re-formatted Kafka storage"
new_kafka="$(read_pid "$KAFKA_PID_FILE")"
new_pg="$(read_pid "$PG_PID_FILE")"
[[ -n "$new_kafka" && "$new_kafka" != "$kafka_pid" ]] || fail "expected a new kafka pid (old $kafka_pid, new '$new_kafka')"
[[ -n "$new_pg" && "$new_pg" != "$pg_pid" ]] || fail "expected a new postgres pid (old $pg_pid, new '$new_pg')"
assert_answering "after down + up"

info "OK"
