# shellcheck shell=bash
# What the scripts under benches/ share, on top of scripts/lib.sh (./dev's
# library): their messages, the processes they start, waiting for a watcher's
# line, their clean-up, and weir's copy of topology/parking.yaml. Sourced,
# never run. A bench sets `bootstrap` (the broker) and `work` (its work
# directory) before bench_cleanup runs.
# shellcheck source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

# "== what" on stderr (stdout is the bench's report), "run.sh: why" before
# exiting, no colours.
SAY_MARK='==' SAY_FD=2 DIE_MARK='run.sh:'
# shellcheck disable=SC2034 # scripts/lib.sh's colours
C_BOLD='' C_RED='' C_GREEN='' C_YELLOW='' C_RESET=''
# Kafka's jars: where ./dev up fetches them, unless KAFKA_LIBS says otherwise.
KAFKA_LIBS="${KAFKA_LIBS:-$KAFKA_DIR/libs}"

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1000 }'; }

require_tools() { # TOOL...
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "$tool not found"
  done
}

# The weir binary and Kafka's jars a broker bench runs on.
require_weir_and_kafka() { # WEIR_BIN
  [[ -x "$1" ]] || die "no weir binary at $1 (cargo build --bin weir)"
  compgen -G "$KAFKA_LIBS/kafka-clients-*.jar" >/dev/null || die "no Kafka jars in $KAFKA_LIBS (./dev up fetches them)"
}

# Every process a bench starts, so that its EXIT trap can stop them.
PIDS=()
# How long stop_pid waits after SIGTERM before SIGKILL.
STOP_WAIT_S=60
forget_pid() {
  local p keep=()
  for p in "${PIDS[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
stop_pid() { # PID [SIGNAL]: TERM waits up to STOP_WAIT_S, then KILL
  local pid="$1" sig="${2:-TERM}"
  if pid_alive "$pid"; then
    kill -"$sig" "$pid" 2>/dev/null || true
    wait_exit $((STOP_WAIT_S * 10)) "$pid" || kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

# Prints the first line of FILE starting with WORD (a watcher's output)
# once there is one, while PID (the process under test) lives; fails,
# saying why, when the watcher timed out, PID exited, or after SECONDS
# (default: the bench's wait_s).
wait_line() { # FILE WORD PID WHAT [SECONDS]
  local file="$1" word="$2" pid="$3" what="$4" limit="${5:-$wait_s}" line last
  local deadline=$((SECONDS + limit))
  while ((SECONDS < deadline)); do
    line="$(grep -m1 "^$word " "$file" 2>/dev/null)" && { echo "$line"; return 0; }
    grep -q '^timeout ' "$file" 2>/dev/null && { echo "run.sh: $what: watcher timed out ($file)" >&2; return 1; }
    if ! pid_alive "$pid"; then
      line="$(grep -m1 "^$word " "$file" 2>/dev/null)" && { echo "$line"; return 0; }
      echo "run.sh: $what: process $pid exited; see $(dirname "$file")" >&2
      return 1
    fi
    sleep 0.05
  done
  last="$(grep '^progress ' "$file" 2>/dev/null | tail -n1)" || true
  echo "run.sh: $what: no '$word' within ${limit}s${last:+; last: $last} ($file)" >&2
  return 1
}

# The consumer groups a bench used, deleted by bench_cleanup.
BENCH_GROUPS=()
# A bench's exit: stops its processes; unless KEEP is 1, deletes the topics
# whose names contain TOPICS (LABEL in messages) and the groups in
# BENCH_GROUPS; deletes the state directories under work, keeps the logs;
# exits with the bench's status.
# shellcheck disable=SC2154 # the bench's bootstrap and work
bench_cleanup() { # KEEP TOPICS LABEL
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do stop_pid "$p" TERM; done
  if [[ "$1" == 1 ]]; then
    say "kept topics $3 and $work"
    exit "$rc"
  fi
  local topics
  topics="$(kafka_topics_matching "$bootstrap" -F "$2")" || true
  if [[ -n "$topics" ]]; then
    say "deleting topics $3"
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" \
      --delete --topic "$topics" >/dev/null 2>&1 || echo "run.sh: could not delete topics $topics" >&2
  fi
  if ((${#BENCH_GROUPS[@]})); then
    local args=() g
    for g in "${BENCH_GROUPS[@]}"; do args+=(--group "$g"); done
    kafka_tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "$bootstrap" \
      --delete "${args[@]}" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"/*/state
  say "logs kept in $work"
  exit "$rc"
}
# bench_cleanup KEEP TOPICS LABEL on exit, also after Ctrl-C or SIGTERM.
BENCH_CLEANUP_ARGS=()
bench_on_exit() { # KEEP TOPICS LABEL
  BENCH_CLEANUP_ARGS=("$@")
  trap 'bench_cleanup "${BENCH_CLEANUP_ARGS[@]}"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# weir's copy of topology/parking.yaml for one bench run:
#
#   parking_topology WEIR_BIN APP INPUT GUARANTEE OUT [SED_EXPR...] [-- LINE...]
#
# Writes OUT: the shipped topology with the app's own names (APP as
# application_id, INPUT as the source topic, APP-dlq, APP-hourly, APP-lots)
# and GUARANTEE, without its free-now-by-region step and without the
# hotspot join (its `global_tables` and `with-hotspot` step; the lot table
# reads `available` again): the job the Kafka Streams and Quix peers
# implement, hourly averages and the lot table, so their lot statuses equal
# weir's field for field. Then each SED_EXPR. Checks that every replaced value and
# each LINE is in OUT (topology/parking.yaml changing shape must not go
# unnoticed) and that `weir validate` accepts it; otherwise says why on
# stderr and returns 1.
parking_topology() {
  local weir="$1" app="$2" input="$3" g="$4" out="$5" w
  shift 5
  local seds=()
  while (($#)) && [[ "$1" != -- ]]; do
    seds+=(-e "$1")
    shift
  done
  [[ "${1:-}" == -- ]] && shift
  sed -e "s/^application_id: parking-hourly\$/application_id: $app/" \
    -e "s/parking_status_dlq/$app-dlq/g" \
    -e "s/parking_status/$input/g" \
    -e "s/parking_hourly_avg/$app-hourly/g" \
    -e "s/parking_lot_status/$app-lots/g" \
    -e "s/^processing_guarantee:.*/processing_guarantee: $g/" \
    -e '/^  # Free spots per region now/,$d' \
    -e '/^# The hotspot reference table/,/^    topic: parking_hotspots$/d' \
    -e "/^  # The lot's hotspot/,/^        HOTSPOT_CATEGORY: category\$/d" \
    -e 's/^    from: with-hotspot$/    from: available/' \
    "${seds[@]}" \
    "$ROOT/topology/parking.yaml" >"$out" || return 1
  ! grep -q "free-now-by-region" "$out" || { echo "topology/parking.yaml changed shape: free-now-by-region not removed from $out" >&2; return 1; }
  ! grep -qE "global_tables|join:|with-hotspot|parking_hotspots|DISTRICT" "$out" || { echo "topology/parking.yaml changed shape: the hotspot join not removed from $out" >&2; return 1; }
  for w in "application_id: $app" "processing_guarantee: $g" "topic: $input" "dead_letter: $app-dlq" \
      "topic: $app-hourly" "topic: $app-lots" "$@"; do
    grep -qF -- "$w" "$out" || { echo "topology/parking.yaml changed shape: '$w' missing in $out" >&2; return 1; }
  done
  "$weir" validate "$out" >"$out.validate" 2>&1 || { cat "$out.validate" >&2; echo "weir validate $out failed" >&2; return 1; }
}
