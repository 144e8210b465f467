# shellcheck shell=bash
# ./dev demo: the parking pipeline end to end on the local services.
# ---- demo: simulator → weir run (parking topology) → weir sink → Postgres ----
DEMO_TOPIC="parking_status"
DEMO_PARTITIONS="${WEIR_DEMO_PARTITIONS:-3}"
DEMO_SEED="${WEIR_DEMO_SEED:-7}"
# 720× : one simulated hour every 5 s, so several hours close during the demo.
DEMO_SPEEDUP="${WEIR_DEMO_SPEEDUP:-720}"
DEMO_DURATION="${WEIR_DEMO_DURATION:-45s}"
DEMO_DIR="$ROOT/.cache/demo"
# Where the demo's weir run serves interactive queries (docs/queries.md).
DEMO_QUERY_ADDR="127.0.0.1:9470"
# `./dev demo --live`: the real city API instead of the simulator.
DEMO_LIVE_CYCLES="${WEIR_DEMO_LIVE_CYCLES:-3}"
DEMO_LIVE_INTERVAL="${WEIR_DEMO_LIVE_INTERVAL:-30s}"
# The binary the demo and `./dev bench-eos` build and run.
WEIR_BIN="$CARGO_TARGET_DIR/debug/weir"
DEMO_PIDS=()

demo_build() {
  cargo build "${CARGO_FEATURES[@]}"
  [[ -x "$WEIR_BIN" ]] || die "cargo build did not produce $WEIR_BIN"
}

# Peak resident memory of the demo's weir processes, from /proc.
demo_report_memory() {
  local pid name
  for pid in "${DEMO_PIDS[@]}"; do
    [[ -r "/proc/$pid/status" ]] || continue
    name="$(tr '\0' ' ' <"/proc/$pid/cmdline" | awk '{ print $2 }')"
    echo "weir $name (pid $pid): peak RSS $(awk '/VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$pid/status")"
  done
}

# What the engine counted (from its /metrics): records in, results out, late
# drops and dead letters, summed over tasks.
demo_report_engine() {
  python3 - <<'PY' || true
import collections, re, urllib.request
try:
    body = urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=5).read().decode()
except OSError as e:
    raise SystemExit(f"metrics not reachable: {e}")
sums = collections.Counter()
for line in body.splitlines():
    m = re.match(r'^(weir_[a-z_]+_total)(\{[^}]*\})? ([0-9.e+]+)$', line)
    if not m:
        continue
    name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
    for extra in ("reason", "topic"):
        lm = re.search(extra + r'="([^"]*)"', labels)
        if lm:
            name += f"{{{extra}={lm.group(1)}}}"
    sums[name] += value
for name in sorted(sums):
    if any(k in name for k in ("consumed", "processed", "produced", "dropped", "dead_letter")):
        print(f"  {name:<78} {int(sums[name]):>8}")
PY
}

demo_stop_background() {
  local pid
  for pid in "${DEMO_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${DEMO_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  DEMO_PIDS=()
}

# A fresh start every time: the demo's topics, the engine's internal topics
# and its local state are deleted (the consumer group's offsets go with the
# topics).
demo_reset() {
  local topics
  topics="$(kafka_topics_matching "$WEIR_BOOTSTRAP" \
    -E '^(parking_status|parking_status_dlq|parking_hourly_avg|parking_lot_status|parking_free_now|parking_hotspots|parking-hourly-.*|parking_sink_dlq)$')" || true
  if [[ -n "$topics" ]]; then
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$WEIR_BOOTSTRAP" --delete --topic "$topics" >/dev/null 2>&1 || true
    sleep 2
  fi
  rm -rf "$DEMO_DIR"
  mkdir -p "$DEMO_DIR"
  if [[ -f "$ROOT/topology/parking-sink.yaml" ]] && command -v psql >/dev/null; then
    demo_psql -qc 'DROP SCHEMA IF EXISTS parking CASCADE' >/dev/null 2>&1 || true
    demo_psql -qc "DELETE FROM weir.weir_sink_offsets WHERE sink_name = 'parking'" >/dev/null 2>&1 || true
  fi
}

# psql on WEIR_PG_URL with the password in PGPASSWORD, not in psql's
# command line (visible to every user in `ps`).
demo_psql() {
  local url="$WEIR_PG_URL" pw=""
  if [[ "$url" =~ ^(postgres(ql)?://[^:/@]+):([^@]*)@(.*)$ ]]; then
    pw="${BASH_REMATCH[3]}"
    url="${BASH_REMATCH[1]}@${BASH_REMATCH[4]}"
  fi
  PGPASSWORD="$pw" psql "$url" "$@"
}

demo_create_topic() {
  local topic="$1" partitions="$2"
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$WEIR_BOOTSTRAP" \
    --create --if-not-exists --topic "$topic" --partitions "$partitions" --replication-factor 1 >/dev/null
}

# The hotspot reference table the topology joins (its `global_tables`):
# `weir run` reads it in full at start, so it is loaded first.
demo_load_hotspots() {
  NO_COLOR=1 "$WEIR_BIN" ingest hotspots --topic parking_hotspots --bootstrap "$WEIR_BOOTSTRAP" ||
    die "weir ingest hotspots failed"
}

demo_start_engine() {
  "$WEIR_BIN" run "$ROOT/topology/parking.yaml" --bootstrap "$WEIR_BOOTSTRAP" \
    --state-dir "$DEMO_DIR/state" --metrics-addr 127.0.0.1:9464 --query-addr "$DEMO_QUERY_ADDR" \
    >"$DEMO_DIR/run.log" 2>&1 &
  DEMO_PIDS+=("$!")
  echo "weir run: pid $!, log $DEMO_DIR/run.log, metrics http://127.0.0.1:9464/metrics, queries http://$DEMO_QUERY_ADDR/v1/stores"
}

demo_start_sink() {
  [[ -f "$ROOT/topology/parking-sink.yaml" ]] || return 0
  # The Postgres URL (with its password) from WEIR_PG_URL in the
  # environment, not --postgres: a command line is visible in `ps`.
  "$WEIR_BIN" sink "$ROOT/topology/parking-sink.yaml" --bootstrap "$WEIR_BOOTSTRAP" \
    --metrics-addr 127.0.0.1:9465 >"$DEMO_DIR/sink.log" 2>&1 &
  DEMO_PIDS+=("$!")
  echo "weir sink: pid $!, log $DEMO_DIR/sink.log, metrics http://127.0.0.1:9465/metrics"
}

# What Prometheus scraped from the demo (`./dev demo --monitoring`).
demo_report_prometheus() {
  python3 - "$PROM_PORT" <<'PY' || true
import json, sys, urllib.parse, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}/api/v1/query?query="
def q(expr):
    body = urllib.request.urlopen(base + urllib.parse.quote(expr), timeout=5).read()
    return json.loads(body)["data"]["result"]
for label, expr in [
    ("targets up", 'up{job=~"weir-.*"}'),
    ("records consumed (weir run)", "sum(weir_records_consumed_total)"),
    ("input records/s, last 30 s", "sum(rate(weir_records_consumed_total[30s]))"),
    ("consumer lag (records)", "sum(weir_consumer_lag)"),
    ("rows upserted (weir sink)", "sum by (table) (weir_sink_rows_upserted_total)"),
]:
    try:
        for r in q(expr):
            labels = ",".join(f"{k}={v}" for k, v in r["metric"].items() if k not in ("__name__",))
            print(f"  {label:<30} {labels:<45} {float(r['value'][1]):>12.1f}")
    except OSError as e:
        print(f"  {label}: {e}")
PY
}

# Simulated event time starts a day ago (brokers reject timestamps more
# than an hour ahead) and runs DEMO_SPEEDUP times faster than the clock.
demo_simulate() {
  local start
  start="$(TZ=Asia/Seoul date -d '-1 day' '+%Y-%m-%d %H:00:00')"
  "$WEIR_BIN" simulate --speedup "$DEMO_SPEEDUP" --duration "$DEMO_DURATION" --start "$start" \
    --seed "$DEMO_SEED" --bad-ratio 0.001 --partitions "$DEMO_PARTITIONS" --topic "$DEMO_TOPIC" \
    --bootstrap "$WEIR_BOOTSTRAP"
}

# The live feed: a few cycles of Seoul's citydata API (all 30 hotspots)
# into the demo topic. The key goes to weir through its environment only.
demo_ingest_live() {
  WEIR_CITYDATA_KEY="$WEIR_CITYDATA_KEY" NO_COLOR=1 "$WEIR_BIN" ingest citydata \
    --cycles "$DEMO_LIVE_CYCLES" --interval "$DEMO_LIVE_INTERVAL" \
    --topic "$DEMO_TOPIC" --partitions "$DEMO_PARTITIONS" --bootstrap "$WEIR_BOOTSTRAP" \
    --metrics-addr 127.0.0.1:9467 2>"$DEMO_DIR/ingest.log" ||
    die "weir ingest citydata failed (no hotspot answered, or records not delivered): see $DEMO_DIR/ingest.log"
  grep -E "poll cycle done" "$DEMO_DIR/ingest.log" | sed 's/^/  /' || true
}

# The latest status of a few lots fed live, from Postgres.
demo_show_live_lots() {
  [[ -f "$ROOT/topology/parking-sink.yaml" ]] || return 0
  say "Postgres: latest real-time lots (parking.parking_lot_status)"
  demo_psql -P pager=off -c "
    SELECT region_code, district, left(parking_name, 24) AS parking_name, capacity, occupied_spots, available_spots, last_update
    FROM parking.parking_lot_status ORDER BY last_update DESC NULLS LAST, parking_code LIMIT 15"
  demo_psql -P pager=off -c "SELECT count(*) AS lots, count(DISTINCT region_code) AS regions FROM parking.parking_lot_status"
  demo_show_free_now
}

# Hourly averages as they appeared on the output topic: one row per region,
# one column per KST hour.
demo_show_topic() {
  local out="$DEMO_DIR/hourly.jsonl"
  kafka_tool org.apache.kafka.tools.consumer.ConsoleConsumer \
    --bootstrap-server "$WEIR_BOOTSTRAP" --topic parking_hourly_avg \
    --from-beginning --timeout-ms 5000 \
    --command-property isolation.level=read_committed >"$out" 2>/dev/null || true
  python3 - "$out" <<'PY'
import collections, json, sys
rows, hours = collections.defaultdict(dict), set()
n = 0
for line in open(sys.argv[1], encoding="utf-8"):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    n += 1
    h = v["window_start"][11:16]
    hours.add((v["window_start"][:13], h))
    rows[(v["region_code"], v["region"])][h] = (v["avg_available_spots"], v["samples"])
cols = [h for _, h in sorted(hours)][-6:]
print(f"{n} hourly results on parking_hourly_avg (avg available spots per region, KST hour):")
print(f"{'region':<28}" + "".join(f"{c:>10}" for c in cols))
for (code, name), cells in sorted(rows.items()):
    label = f"{code} {name}"[:26]
    print(f"{label:<28}" + "".join(f"{cells[c][0]:>10.1f}" if c in cells else f"{'':>10}" for c in cols))
sys.exit(0 if n else 1)
PY
}

demo_show_postgres() {
  [[ -f "$ROOT/topology/parking-sink.yaml" ]] || return 0
  say "Postgres: latest hourly rows (parking.parking_hourly_avg)"
  demo_psql -P pager=off -c "
    SELECT region_code, region, hour, round(avg_available_spots::numeric, 1) AS avg_available, samples, updated_at
    FROM parking.parking_hourly_avg ORDER BY hour DESC, region_code LIMIT 20"
  demo_psql -P pager=off -c "
    SELECT count(*) AS rows, count(DISTINCT (region_code, hour)) AS distinct_region_hours,
           min(hour) AS first_hour, max(hour) AS last_hour FROM parking.parking_hourly_avg"
  demo_psql -P pager=off -c "SELECT count(*) AS lots FROM parking.parking_lot_status"
  demo_show_free_now
}

# Free spots per region now (free-now-by-region, kept as lots change), with
# the region's district from the hotspot table, and summed per district.
demo_show_free_now() {
  say "Postgres: free spots per region now (parking.parking_free_now)"
  demo_psql -P pager=off -c "
    SELECT region_code, region, district, available_spots, realtime_lots, updated_at
    FROM parking.parking_free_now ORDER BY available_spots DESC, region_code LIMIT 15"
  say "Postgres: free spots per district now"
  demo_psql -P pager=off -c "
    SELECT coalesce(district, '(unknown)') AS district, sum(available_spots) AS available_spots,
           sum(realtime_lots) AS realtime_lots, count(*) AS regions
    FROM parking.parking_free_now GROUP BY 1 ORDER BY 2 DESC, 1"
}

# Interactive queries into the running engine's stores (`weir run
# --query-addr`, docs/queries.md): a lot's latest status and a region's
# free spots now, as a client would ask (python3, not curl: curl is not on
# every fresh machine).
demo_show_queries() {
  say "interactive queries into weir run's stores (http://$DEMO_QUERY_ADDR, docs/queries.md)"
  python3 - "$DEMO_QUERY_ADDR" <<'PY' || warn "the query server did not answer (see $DEMO_DIR/run.log)"
import json, sys, urllib.parse, urllib.request
base = f"http://{sys.argv[1]}"
def get(path):
    print(f"$ curl -s '{base}{path}'")
    body = json.load(urllib.request.urlopen(base + path, timeout=10))
    print(json.dumps(body, ensure_ascii=False, indent=2))
    return body
lot = json.load(urllib.request.urlopen(base + "/v1/stores/latest-per-lot/keys?limit=1", timeout=10))["rows"][0]["key"]
get("/v1/stores/latest-per-lot/keys/" + urllib.parse.quote(lot, safe=""))
get("/v1/stores/free-now-by-region/keys?prefix=" + urllib.parse.quote('["POI001",', safe=""))
PY
}

cmd_demo() {
  local live=0 keep=0 a
  take_monitoring_flag "$@"
  for a in ${ARGS[@]+"${ARGS[@]}"}; do
    case "$a" in
      --live) live=1 ;;
      --keep) keep=1 ;;
      *) die "demo: unknown option $a (usage: ./dev demo [--live] [--monitoring] [--keep])" ;;
    esac
  done
  if ((live)) && [[ -z "${WEIR_CITYDATA_KEY:-}" ]]; then
    die "./dev demo --live polls Seoul's citydata API and needs a key: set WEIR_CITYDATA_KEY (free at https://data.seoul.go.kr, '인증키 신청'); './dev demo' runs on the simulated feed"
  fi
  ensure_build_prereqs
  if ((MONITORING)); then cmd_up --monitoring; else cmd_up; fi
  say "building weir"
  demo_build
  say "resetting the demo topics and state"
  demo_reset
  demo_create_topic "$DEMO_TOPIC" "$DEMO_PARTITIONS"
  say "loading the hotspot table (data/seoul_hotspots.json → parking_hotspots)"
  demo_load_hotspots
  trap demo_stop_background EXIT
  say "starting the engine and the sink"
  demo_start_engine
  demo_start_sink
  if ((live)); then
    say "polling Seoul's citydata API: $DEMO_LIVE_CYCLES cycles, every $DEMO_LIVE_INTERVAL (log $DEMO_DIR/ingest.log)"
    demo_ingest_live
    sleep 5
    say "hourly averages on parking_hourly_avg"
    # Live records carry the wall clock: an hour closes at its end (KST)
    # plus the one-minute grace, so a short demo may close none.
    demo_show_topic || echo "none yet: the current hour's averages appear when it ends (+1 min grace, KST); keep 'weir ingest citydata' running to feed it"
    sleep 3
    demo_show_live_lots
  else
    say "simulating the Seoul parking feed for $DEMO_DURATION at ${DEMO_SPEEDUP}x (an hour every $((3600 / DEMO_SPEEDUP)) s)"
    demo_simulate
    sleep 5
    say "hourly averages on parking_hourly_avg"
    demo_show_topic || die "no hourly results; see $DEMO_DIR/run.log"
    sleep 3
    demo_show_postgres
  fi
  demo_show_queries
  say "what the engine counted (weir run's /metrics)"
  demo_report_engine
  if ((MONITORING)); then
    sleep 6 # one more scrape (every 5 s)
    say "what Prometheus scraped (http://127.0.0.1:$PROM_PORT; it keeps running: ./dev down stops it)"
    demo_report_prometheus
  fi
  say "memory"
  demo_report_memory
  if ((keep)); then
    say "weir run and weir sink keep running (--keep): queries on http://$DEMO_QUERY_ADDR/v1/stores, metrics on :9464; Ctrl-C stops them"
    wait "${DEMO_PIDS[@]}" || true
  fi
  demo_stop_background
  trap - EXIT
  grep -E "ERROR" "$DEMO_DIR"/*.log || true
}

