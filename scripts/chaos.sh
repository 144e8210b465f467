# shellcheck shell=bash
# `./dev chaos [--seed N] [--runs N] [--minutes M] [--only KIND,...] [--brokers 1|3] [--plan]`:
# the seeded fault campaign (tests/chaos.rs, docs/chaos.md) against the
# ./dev up broker (or, with --brokers 3, the 3-node cluster) and Postgres.
# It SIGSTOPs and SIGKILLs brokers and restarts Postgres: whatever happens
# to the test process, the brokers are resumed (and the 3-node cluster's
# killed nodes started again) and the services brought up again on exit.
chaos_services_answer() {
  kafka_ping 5 >/dev/null 2>&1 && port_open "$PG_HOST" "$PG_PORT"
}
# Resumes the brokers; Postgres is started again by the test's own guard.
# No `./dev up` of the single broker here: from a worktree whose .cache is
# a symlink to the main checkout's, `up` does not recognise the services as
# its own (their command lines name the other path) and removes kafka.pid.
chaos_cleanup() {
  local pid n
  pid="$(cat "$KAFKA_PID" 2>/dev/null || true)"
  [[ -n "$pid" ]] && kill -CONT "$pid" 2>/dev/null
  if [[ "${CHAOS_BROKERS:-1}" == 3 ]]; then
    for ((n = 1; n <= KAFKA3_NODES; n++)); do
      pid="$(cat "$(kafka3_pid_file "$n")" 2>/dev/null || true)"
      [[ -n "$pid" ]] && kill -CONT "$pid" 2>/dev/null
    done
    with_lock kafka3_up >/dev/null || warn "chaos: the 3-node cluster did not come back whole; see ./dev status"
  fi
  chaos_services_answer || warn "chaos: Kafka or PostgreSQL does not answer after the campaign; see ./dev status"
}
cmd_chaos() {
  local seed="" runs="" minutes="" only="" plan="" brokers=1
  while (($# > 0)); do
    case "$1" in
      --seed) seed="${2:?--seed N}"; shift 2 ;;
      --plan) plan=1; shift ;;
      --only) only="${2:?--only KIND[,KIND...]}"; shift 2 ;;
      --runs) runs="${2:?--runs N}"; shift 2 ;;
      --minutes) minutes="${2:?--minutes M}"; shift 2 ;;
      --brokers) brokers="${2:?--brokers 1|3}"; shift 2 ;;
      *) die "chaos: unknown option $1 (usage: ./dev chaos [--seed N] [--runs N] [--minutes M] [--only KIND,...] [--brokers 1|3] [--plan])" ;;
    esac
  done
  [[ "$brokers" == 1 || "$brokers" == 3 ]] || die "chaos: --brokers $brokers: 1 (the single broker) or 3 (the 3-node cluster)"
  ensure_build_prereqs
  export WEIR_CHAOS_SEED="$seed" WEIR_CHAOS_RUNS="$runs" WEIR_CHAOS_MINUTES="$minutes" \
    WEIR_CHAOS_ONLY="$only" WEIR_CHAOS_BROKERS="$brokers"
  if [[ -n "$plan" ]]; then
    WEIR_CHAOS_PLAN_ONLY=1 cargo test "${CARGO_FEATURES[@]}" --test chaos chaos_campaign -- --ignored --nocapture
    return
  fi
  # Services that answer are used as they are (e.g. those of the main
  # checkout, seen from a worktree through a symlinked .cache).
  chaos_services_answer || cmd_up >/dev/null
  # The network faults need the broker's PROXIED listener (a broker started
  # by an older ./dev lacks it).
  if kafka_running_pid >/dev/null; then kafka_require_current_props; fi
  CHAOS_BROKERS="$brokers"
  local bootstrap="$WEIR_BOOTSTRAP"
  if ((brokers == 3)); then
    # Postgres (and the unused single broker) of ./dev up, the topics on
    # the 3-node cluster.
    with_lock kafka3_up >/dev/null
    bootstrap="$WEIR_BOOTSTRAP3"
  fi
  local rc=0
  trap chaos_cleanup EXIT
  WEIR_BOOTSTRAP="$bootstrap" cargo test "${CARGO_FEATURES[@]}" --test chaos -- --ignored --nocapture || rc=$?
  trap - EXIT
  chaos_cleanup
  return "$rc"
}
