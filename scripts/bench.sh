# shellcheck shell=bash
# ./dev bench, bench-offline, bench-peer and bench-eos: what each measures
# and where its figures go is in benches/README.md.
cmd_bench_offline() {
  ensure_build_prereqs
  cmd_up
  cargo bench "${CARGO_FEATURES[@]}" --profile dev "$@"
}

# weir vs ConsumerPerformance, the passthrough (examples/passthrough.rs: the
# client library's floor), Kafka Streams 4.4 (a real KafkaStreams app) and
# Quix Streams on the broker: benches/broker/run.sh [--records N]
# [--partitions P] [--only LIST], or with --latency [--rate R] [--seconds S]
# [--warmup W] end-to-end latency at a fixed offered rate; --state big [--keys K]
# [--records N] [--only LIST] [--no-restore]: the big-state bench
# (benches/bigstate/run.sh). Honours WEIR_BOOTSTRAP (then no broker is
# started here) and WEIR_BIN (then nothing is built; the passthrough is
# WEIR_PASSTHROUGH_BIN, or $CARGO_TARGET_DIR/debug/examples/passthrough).
cmd_bench() {
  # --state big: the big-state bench (benches/bigstate/run.sh) instead.
  local script="$ROOT/benches/broker/run.sh"
  case "${1:-}" in
    --state | --state=*)
      local state="${1#--state}"
      state="${state#=}"
      if [[ -z "$state" ]]; then state="${2:-}"; shift; fi
      shift
      [[ "$state" == big ]] || die "bench --state: the only state bench is 'big' (benches/bigstate/run.sh)"
      script="$ROOT/benches/bigstate/run.sh" ;;
  esac
  ensure_build_prereqs
  command -v mvn >/dev/null 2>&1 || die "bench needs Maven and a JDK 17+ (apt-get install maven)"
  # Quix Streams goes into a venv (Debian's python3 needs python3-venv for it).
  ensure_prereqs "python3-venv:pyvenv"
  if [[ -n "$CALLER_WEIR_BOOTSTRAP" ]]; then
    export WEIR_BOOTSTRAP="$CALLER_WEIR_BOOTSTRAP"
    kafka_fetch_jars # ConsumerPerformance and the bench's admin tools run on them
  else
    cmd_up
  fi
  local bin="$CALLER_WEIR_BIN" passthrough="${WEIR_PASSTHROUGH_BIN:-}"
  if [[ -z "$bin" ]]; then
    # One build (the dev profile's artifacts, as every cargo command here).
    cargo build "${CARGO_FEATURES[@]}" --bin weir --example passthrough
    # Private copies: other builds sharing CARGO_TARGET_DIR may replace the binaries mid-run.
    local dir
    dir="$(mktemp -d)"
    cp "$CARGO_TARGET_DIR/debug/weir" "$CARGO_TARGET_DIR/debug/examples/passthrough" "$dir/"
    bin="$dir/weir"
    passthrough="$dir/passthrough"
  fi
  KAFKA_LIBS="$KAFKA_LIBS" WEIR_BIN="$bin" WEIR_PASSTHROUGH_BIN="$passthrough" \
    bash "$script" "$@"
}

# weir vs Kafka Streams (TopologyTestDriver) on the parking job, one core.
cmd_bench_peer() {
  ensure_build_prereqs
  command -v mvn >/dev/null 2>&1 || die "bench-peer needs Maven and a JDK 17+ (apt-get install maven)"
  bash "$ROOT/benches/peer/run.sh"
}

# exactly_once vs at_least_once against the local broker (same run, same
# input), and restore after a crash under exactly_once (changelog tail vs full).
cmd_bench_eos() {
  ensure_build_prereqs
  cmd_up
  cargo build "${CARGO_FEATURES[@]}" --bin weir
  [[ -x "$WEIR_BIN" ]] || die "cargo build did not produce $WEIR_BIN"
  WEIR_BIN="$WEIR_BIN" bash "$ROOT/benches/eos/run.sh"
}

# Interactive queries: lookup latency while the parking job runs at a fixed
# rate, and the job's throughput with and without a query load
# (benches/query/run.sh).
cmd_bench_queries() {
  ensure_build_prereqs
  cmd_up
  cargo build "${CARGO_FEATURES[@]}" --bin weir
  [[ -x "$WEIR_BIN" ]] || die "cargo build did not produce $WEIR_BIN"
  local bin
  # A private copy: other builds sharing CARGO_TARGET_DIR may replace the binary mid-run.
  bin="$(mktemp -d)/weir"
  cp "$WEIR_BIN" "$bin"
  WEIR_BIN="$bin" bash "$ROOT/benches/query/run.sh"
}
