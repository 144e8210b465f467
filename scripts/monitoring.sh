# shellcheck shell=bash
# Prometheus (`./dev up --monitoring`): the distribution's package, scraping
# what ops/prometheus/prometheus.yml names (the demo's weir run and sink).
PROM_PORT="${WEIR_PROMETHEUS_PORT:-9090}"
PROM_DIR="$CACHE/prometheus"
PROM_PID="$PROM_DIR/prometheus.pid"
PROM_LOG="$PROM_DIR/prometheus.log"
PROM_CONFIG="$ROOT/ops/prometheus/prometheus.yml"

PREREQS_MONITORING=("prometheus:prometheus" "prometheus:promtool")

prom_running_pid() {
  local pid
  pid="$(cat "$PROM_PID" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && pid_alive "$pid" && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == prometheus* ]] || return 1
  echo "$pid"
}

prom_ready() { curl -fsS --max-time 2 "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1; }

prom_up() {
  local pid
  if pid="$(prom_running_pid)"; then
    say "Prometheus already running (pid $pid) on 127.0.0.1:$PROM_PORT"
    return 0
  fi
  if port_open 127.0.0.1 "$PROM_PORT"; then
    die "port 127.0.0.1:$PROM_PORT is in use by a process ./dev did not start (a system Prometheus? 'systemctl stop prometheus', or set WEIR_PROMETHEUS_PORT)"
  fi
  mkdir -p "$PROM_DIR/data"
  promtool check config "$PROM_CONFIG" >/dev/null || die "promtool rejects $PROM_CONFIG"
  say "starting Prometheus on 127.0.0.1:$PROM_PORT (config $PROM_CONFIG, log $PROM_LOG)"
  setsid nohup prometheus --config.file="$PROM_CONFIG" --storage.tsdb.path="$PROM_DIR/data" \
    --storage.tsdb.retention.time=2d --web.listen-address="127.0.0.1:$PROM_PORT" \
    >"$PROM_LOG" 2>&1 </dev/null 9>&- &
  echo "$!" >"$PROM_PID"
  local i
  for ((i = 0; i < 300; i++)); do
    prom_ready && break
    pid_alive "$(cat "$PROM_PID")" || { tail -n 20 "$PROM_LOG" >&2; die "Prometheus exited; see $PROM_LOG"; }
    sleep 0.1
  done
  prom_ready || die "Prometheus not ready after 30 s; see $PROM_LOG"
  say "Prometheus ready (pid $(cat "$PROM_PID")): http://127.0.0.1:$PROM_PORT"
}

prom_down() {
  local pid
  if ! pid="$(prom_running_pid)"; then
    rm -f "$PROM_PID"
    return 0
  fi
  say "stopping Prometheus (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  wait_exit 300 "$pid" || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PROM_PID"
}

prom_status() {
  local pid
  if pid="$(prom_running_pid)"; then
    echo "prometheus  running  pid $pid  http://127.0.0.1:$PROM_PORT  log $PROM_LOG"
  elif [[ -d "$PROM_DIR" ]]; then
    echo "prometheus  stopped"
  fi
}

# `--monitoring` anywhere in the arguments: sets MONITORING=1 and leaves
# the other arguments in ARGS.
MONITORING=0
ARGS=()
take_monitoring_flag() {
  ARGS=()
  local a
  for a in "$@"; do
    if [[ "$a" == --monitoring ]]; then MONITORING=1; else ARGS+=("$a"); fi
  done
}

# `./dev monitoring [up|down|status]`: Prometheus alone (Kafka and
# PostgreSQL untouched).
cmd_monitoring() {
  case "${1:-up}" in
    up) ensure_prereqs "${PREREQS_MONITORING[@]}"; with_lock prom_up ;;
    down) with_lock prom_down ;;
    status) prom_status ;;
    *) die "usage: ./dev monitoring [up|down|status]" ;;
  esac
}
