# shellcheck shell=bash
# Kafka for development and tests (`./dev up`): the single KRaft broker
# (with PostgreSQL, scripts/postgres.sh) and the separate 3-node cluster
# (`./dev up --brokers 3`), both run from the jars scripts/kafka/pom.xml
# names, fetched once into .cache/kafka/libs.
KAFKA_PORT="${WEIR_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${WEIR_KAFKA_CONTROLLER_PORT:-9093}"
# The broker's second listener, PROXIED, for network faults (the chaos
# campaign, tests/chaos/proxy.rs): it listens on KAFKA_PROXIED_PORT and
# advertises KAFKA_PROXY_PORT, where nothing listens except a test's proxy
# (forwarding to KAFKA_PROXIED_PORT). A client bootstrapped at the proxy
# therefore talks to the broker only through it.
KAFKA_PROXIED_PORT="${WEIR_KAFKA_PROXIED_PORT:-$((KAFKA_PORT + 10))}"
KAFKA_PROXY_PORT="${WEIR_KAFKA_PROXY_PORT:-$((KAFKA_PORT + 11))}"
# Two secured listeners, for the tests of weir's TLS and SASL settings:
# SASL_SSL with SCRAM-SHA-512 (a managed Kafka's usual setup) and SSL
# requiring a client certificate (mutual TLS). Certificates come from a
# throwaway CA made by `./dev up` under .cache/kafka/tls; the SCRAM user
# is created by `./dev up` after the broker starts. Local test secrets only.
KAFKA_SASL_SSL_PORT="${WEIR_KAFKA_SASL_SSL_PORT:-$((KAFKA_PORT + 20))}"
KAFKA_MTLS_PORT="${WEIR_KAFKA_MTLS_PORT:-$((KAFKA_PORT + 30))}"
KAFKA_SCRAM_USER=weir
KAFKA_SCRAM_PASSWORD=weir-scram-secret
KAFKA_KEYSTORE_PASSWORD=weir-keystore
KAFKA_HOST=127.0.0.1

KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_LIBS_MARKER="$KAFKA_LIBS/.complete"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_PROPS="$KAFKA_DIR/server.properties"
KAFKA_LOG="$KAFKA_DIR/kafka.log"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_CLUSTER_ID_FILE="$KAFKA_DIR/cluster.id"
TLS_DIR="$KAFKA_DIR/tls"
KAFKA_POM="$ROOT/scripts/kafka/pom.xml"
KAFKA_LOG4J="$ROOT/scripts/kafka/log4j2.properties"
KAFKA_PING="$ROOT/scripts/kafka/kafka_ping.py"
KAFKA_HEAP="${WEIR_KAFKA_HEAP:--Xms256m -Xmx512m}"
KAFKA_READY_TIMEOUT="${WEIR_KAFKA_READY_TIMEOUT:-60}"

# 3-node KRaft cluster (`./dev up --brokers 3`), separate from the single
# broker: node i (1..3) is broker + controller on KAFKA3_PORT+i-1 and
# KAFKA3_CONTROLLER_PORT+i-1, with its files under .cache/kafka3/node<i>.
KAFKA3_NODES=3
KAFKA3_PORT="${WEIR_KAFKA3_PORT:-19092}"
KAFKA3_CONTROLLER_PORT="${WEIR_KAFKA3_CONTROLLER_PORT:-19192}"
KAFKA3_DIR="$CACHE/kafka3"
KAFKA3_CLUSTER_ID_FILE="$KAFKA3_DIR/cluster.id"

export WEIR_BOOTSTRAP="${KAFKA_HOST}:${KAFKA_PORT}"
export WEIR_BOOTSTRAP_PROXIED="${KAFKA_HOST}:${KAFKA_PROXY_PORT}"
export WEIR_PROXIED_LISTENER="${KAFKA_HOST}:${KAFKA_PROXIED_PORT}"
export WEIR_BOOTSTRAP_SASL_SSL="${KAFKA_HOST}:${KAFKA_SASL_SSL_PORT}"
export WEIR_BOOTSTRAP_MTLS="${KAFKA_HOST}:${KAFKA_MTLS_PORT}"
export WEIR_TLS_DIR="$TLS_DIR"
export WEIR_KAFKA_SCRAM_USER="$KAFKA_SCRAM_USER"
export WEIR_KAFKA_SCRAM_PASSWORD="$KAFKA_SCRAM_PASSWORD"
kafka3_port() { echo $((KAFKA3_PORT + $1 - 1)); }
kafka3_controller_port() { echo $((KAFKA3_CONTROLLER_PORT + $1 - 1)); }
# host:port of every node's broker listener, comma-separated.
kafka3_bootstrap() {
  local i out=""
  for ((i = 1; i <= KAFKA3_NODES; i++)); do out+="${out:+,}${KAFKA_HOST}:$(kafka3_port "$i")"; done
  echo "$out"
}
WEIR_BOOTSTRAP3="$(kafka3_bootstrap)"
export WEIR_BOOTSTRAP3

# ---------------------------------------------------------------------------
# Both: jars, certificates, cluster ids, the JVM
# ---------------------------------------------------------------------------
kafka_pom_hash() { sha256sum "$KAFKA_POM" | awk '{ print $1 }'; }

kafka_fetch_jars() {
  local want
  want="$(kafka_pom_hash)"
  if [[ -f "$KAFKA_LIBS_MARKER" && "$(cat "$KAFKA_LIBS_MARKER")" == "$want" ]]; then
    return 0
  fi
  say "fetching Kafka jars with Maven (scripts/kafka/pom.xml -> .cache/kafka/libs)"
  mkdir -p "$KAFKA_DIR"
  local tmp="$KAFKA_DIR/libs.tmp.$$"
  rm -rf "$tmp"
  if ! mvn -B -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" -DincludeScope=runtime >"$KAFKA_DIR/mvn.log" 2>&1; then
    rm -rf "$tmp"
    tail -n 30 "$KAFKA_DIR/mvn.log" >&2
    die "mvn dependency:copy-dependencies failed for $KAFKA_POM (network? ~/.m2 settings?); full output in $KAFKA_DIR/mvn.log"
  fi
  compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || { rm -rf "$tmp"; die "Maven did not produce kafka_2.13 jar in $tmp"; }
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
  echo "$want" >"$KAFKA_LIBS_MARKER"
  say "Kafka jars: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars, $(du -sh "$KAFKA_LIBS" | cut -f1)"
}

# The proxied listener's ports must not collide with the broker's, the
# database's or the 3-node cluster's.
kafka_check_proxied_ports() {
  local q taken=("$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$PG_PORT")
  for ((q = 1; q <= KAFKA3_NODES; q++)); do taken+=("$(kafka3_port "$q")" "$(kafka3_controller_port "$q")"); done
  kafka_check_port_pair "$KAFKA_PROXIED_PORT" "$KAFKA_PROXY_PORT" "proxied listener" \
    "WEIR_KAFKA_PROXIED_PORT / WEIR_KAFKA_PROXY_PORT" "${taken[@]}"
  taken+=("$KAFKA_PROXIED_PORT" "$KAFKA_PROXY_PORT")
  kafka_check_port_pair "$KAFKA_SASL_SSL_PORT" "$KAFKA_MTLS_PORT" "secured listener" \
    "WEIR_KAFKA_SASL_SSL_PORT / WEIR_KAFKA_MTLS_PORT" "${taken[@]}"
}

# Fails unless ports A and B differ from each other and from every TAKEN
# one; WHAT names them, VARS ("VAR_A / VAR_B") sets them.
kafka_check_port_pair() { # A B WHAT VARS TAKEN...
  local a="$1" b="$2" what="$3" vars="$4" p q
  shift 4
  [[ "$a" != "$b" ]] || die "${vars% / *} and ${vars#* / } are both $b"
  for p in "$a" "$b"; do
    for q in "$@"; do
      [[ "$p" != "$q" ]] || die "$what port $p collides with another service's port (set $vars)"
    done
  done
}

# The throwaway CA and the certificates of the secured listeners (and of
# PostgreSQL's TLS), made once under .cache/kafka/tls:
#   ca.pem            the CA every test client trusts
#   server.p12        the broker's key and certificate (127.0.0.1, localhost)
#   client.pem/.key   a client certificate the mTLS listener accepts
#   other-ca.pem      a CA nobody uses: trusting it instead of ca.pem must fail
#   other-client.pem/.key  a client certificate from other-ca, which the
#                     mTLS listener must refuse
# EC P-256 keys: made in milliseconds, read by Java and OpenSSL alike.
tls_setup() {
  [[ -f "$TLS_DIR/.complete" ]] && return 0
  say "making a throwaway CA and test certificates in $TLS_DIR"
  local tmp="$TLS_DIR.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  (
    cd "$tmp"
    umask 077
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 3650 -subj "/CN=weir dev CA" 2>/dev/null
    openssl req -x509 "${ec[@]}" -keyout other-ca.key -out other-ca.pem -days 3650 -subj "/CN=weir untrusted CA" 2>/dev/null
    # name, issuing CA, subject, extensions
    leaf() {
      openssl req "${ec[@]}" -keyout "$1.key" -out "$1.csr" -subj "$3" 2>/dev/null
      printf '%s\n' "$4" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 3650 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    leaf server ca "/CN=localhost" "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
    leaf client ca "/CN=weir-client" "extendedKeyUsage=clientAuth"
    leaf other-client other-ca "/CN=weir-untrusted-client" "extendedKeyUsage=clientAuth"
    openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name broker \
      -passout "pass:$KAFKA_KEYSTORE_PASSWORD" -out server.p12
    chmod 600 ./*.key server.p12
    chmod 644 ./*.pem
  ) || { rm -rf "$tmp"; die "making the test certificates with openssl failed"; }
  rm -rf "$TLS_DIR"
  mv "$tmp" "$TLS_DIR"
  touch "$TLS_DIR/.complete"
}

# Makes a cluster id in FILE unless it holds one (kafka.tools.StorageTool random-uuid).
kafka_cluster_id() { # FILE
  [[ -s "$1" ]] && return 0
  mkdir -p "$(dirname "$1")"
  kafka_tool kafka.tools.StorageTool random-uuid | tr -d '[:space:]' >"$1.tmp"
  [[ -s "$1.tmp" ]] || die "kafka.tools.StorageTool random-uuid produced no id"
  mv "$1.tmp" "$1"
}

# Starts a broker (+ controller) on PROPS in the background, detached from
# this shell, appending to LOG, its pid in PID_FILE.
kafka_start_jvm() { # PROPS LOG DIR PID_FILE BANNER
  {
    echo
    echo "==== $5 at $(date -Is) ===="
  } >>"$2"
  # shellcheck disable=SC2086 # KAFKA_HEAP is a list of JVM flags
  setsid nohup java $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
    -Dkafka.logs.file="$2" -Dkafka.logs.dir="$3" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$1" \
    >>"$2" 2>&1 </dev/null 9>&- &
  echo "$!" >"$4"
}

# ---------------------------------------------------------------------------
# The single broker
# ---------------------------------------------------------------------------
# The server.properties lines of both: the internal topics with RF replicas
# and MIN_ISR in sync, then fast group joins.
kafka_props_topics() { # RF MIN_ISR
  cat <<EOF
offsets.topic.replication.factor=$1
transaction.state.log.replication.factor=$1
transaction.state.log.min.isr=$2
min.insync.replicas=$2
default.replication.factor=$1
share.coordinator.state.topic.replication.factor=$1
share.coordinator.state.topic.min.isr=$2

# Fast group joins in tests; weir creates its topics explicitly.
group.initial.rebalance.delay.ms=0
num.partitions=1
auto.create.topics.enable=false
EOF
}

# The small-footprint lines of both, LINE... among them.
kafka_props_footprint() { # LINE...
  echo "# Small footprint."
  echo "num.network.threads=2"
  echo "num.io.threads=4"
  (($# == 0)) || printf '%s\n' "$@"
  echo "log.retention.hours=168"
  echo "offsets.topic.num.partitions=10"
  echo "transaction.state.log.num.partitions=10"
}

# The broker's server.properties as this script writes it, on stdout.
kafka_props_text() {
  cat <<EOF
# Generated by ./dev up -- do not edit (edit the dev script instead).
# Single-node KRaft: combined broker + controller, 127.0.0.1 only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@${KAFKA_HOST}:${KAFKA_CONTROLLER_PORT}
# PROXIED: advertises a port where only a test's proxy listens (forwarding
# here), for network faults between a client and the broker.
# SASL_SSL (SCRAM-SHA-512) and MTLS (SSL with a required client
# certificate): the listeners of weir's security tests.
listeners=PLAINTEXT://${KAFKA_HOST}:${KAFKA_PORT},CONTROLLER://${KAFKA_HOST}:${KAFKA_CONTROLLER_PORT},PROXIED://${KAFKA_HOST}:${KAFKA_PROXIED_PORT},SASL_SSL://${KAFKA_HOST}:${KAFKA_SASL_SSL_PORT},MTLS://${KAFKA_HOST}:${KAFKA_MTLS_PORT}
advertised.listeners=PLAINTEXT://${KAFKA_HOST}:${KAFKA_PORT},PROXIED://${KAFKA_HOST}:${KAFKA_PROXY_PORT},SASL_SSL://${KAFKA_HOST}:${KAFKA_SASL_SSL_PORT},MTLS://${KAFKA_HOST}:${KAFKA_MTLS_PORT}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=${TLS_DIR}/server.p12
ssl.keystore.password=${KAFKA_KEYSTORE_PASSWORD}
ssl.key.password=${KAFKA_KEYSTORE_PASSWORD}
ssl.truststore.type=PEM
ssl.truststore.location=${TLS_DIR}/ca.pem
listener.name.mtls.ssl.client.auth=required
log.dirs=${KAFKA_DATA}

# Single node: every internal topic with replication factor 1.
$(kafka_props_topics 1 1)

# The one node is its own controller: stalled (SIGSTOP, as the fault tests
# and ./dev chaos do) past the default 9 s broker session, it fences itself
# on resume, every partition is leaderless for a moment, and the
# transaction coordinator skips the markers it cannot deliver then, leaving
# a transaction open for good (docs/chaos.md, "a hanging transaction"). In
# a real cluster another controller fences a stalled broker and its
# partitions move; this artifact of one node is kept out of the tests.
broker.session.timeout.ms=120000

$(kafka_props_footprint)
EOF
}

kafka_write_props() {
  mkdir -p "$KAFKA_DATA"
  kafka_props_text >"$KAFKA_PROPS.tmp"
  mv "$KAFKA_PROPS.tmp" "$KAFKA_PROPS"
}

# Fails, saying what to do, if the running broker was started with another
# server.properties than this script writes now (an older ./dev: e.g.
# without the PROXIED listener). It is not restarted behind the caller's
# back: other work may be using it.
kafka_require_current_props() {
  if ! kafka_props_text | cmp -s - "$KAFKA_PROPS"; then
    die "the running Kafka broker was started with an older $KAFKA_PROPS (this ./dev writes another one, e.g. with the SASL_SSL listener on $KAFKA_HOST:$KAFKA_SASL_SSL_PORT and the MTLS one on $KAFKA_HOST:$KAFKA_MTLS_PORT); restart it: ./dev down && ./dev up"
  fi
}

kafka_format_storage() {
  if [[ -f "$KAFKA_DATA/meta.properties" ]]; then
    return 0
  fi
  kafka_cluster_id "$KAFKA_CLUSTER_ID_FILE"
  say "formatting Kafka storage (cluster id $(cat "$KAFKA_CLUSTER_ID_FILE"))"
  if ! kafka_tool kafka.tools.StorageTool format --ignore-formatted \
      -t "$(cat "$KAFKA_CLUSTER_ID_FILE")" -c "$KAFKA_PROPS" >"$KAFKA_DIR/format.log" 2>&1; then
    cat "$KAFKA_DIR/format.log" >&2
    die "kafka.tools.StorageTool format failed"
  fi
}

# Prints the pid if the Kafka broker we started is alive, else fails.
kafka_running_pid() { pid_from_file "$KAFKA_PID" "kafka.Kafka $KAFKA_PROPS"; }

kafka_ping() { python3 "$KAFKA_PING" "$WEIR_BOOTSTRAP" "${1:-5}"; }

kafka_log_tail() {
  log_tail "$KAFKA_LOG"
  echo "-------------------------------------" >&2
}

kafka_up() {
  local pid
  kafka_check_proxied_ports
  if pid="$(kafka_running_pid)"; then
    kafka_require_current_props
    if kafka_ping 5 >/dev/null 2>&1; then
      kafka_scram_user
      say "Kafka already running (pid $pid) on $WEIR_BOOTSTRAP"
      return 0
    fi
    say "Kafka (pid $pid) is running but not answering yet; waiting"
  else
    rm -f "$KAFKA_PID"
    if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
      die "port $KAFKA_HOST:$KAFKA_PORT is in use by a process ./dev did not start (set WEIR_KAFKA_PORT to use another port)"
    fi
    if port_open "$KAFKA_HOST" "$KAFKA_CONTROLLER_PORT"; then
      die "controller port $KAFKA_HOST:$KAFKA_CONTROLLER_PORT is in use by a process ./dev did not start (set WEIR_KAFKA_CONTROLLER_PORT)"
    fi
    if port_open "$KAFKA_HOST" "$KAFKA_PROXIED_PORT"; then
      die "proxied listener port $KAFKA_HOST:$KAFKA_PROXIED_PORT is in use by a process ./dev did not start (set WEIR_KAFKA_PROXIED_PORT)"
    fi
    local p
    for p in "$KAFKA_SASL_SSL_PORT" "$KAFKA_MTLS_PORT"; do
      if port_open "$KAFKA_HOST" "$p"; then
        die "secured listener port $KAFKA_HOST:$p is in use by a process ./dev did not start (set WEIR_KAFKA_SASL_SSL_PORT / WEIR_KAFKA_MTLS_PORT)"
      fi
    done
    kafka_fetch_jars
    tls_setup
    kafka_write_props
    kafka_format_storage
    say "starting Kafka on $WEIR_BOOTSTRAP (log: $KAFKA_LOG)"
    kafka_start_jvm "$KAFKA_PROPS" "$KAFKA_LOG" "$KAFKA_DIR" "$KAFKA_PID" "./dev up: starting Kafka"
    pid="$(cat "$KAFKA_PID")"
  fi
  local deadline=$((SECONDS + KAFKA_READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! pid_alive "$pid"; then
      kafka_log_tail
      rm -f "$KAFKA_PID"
      die "Kafka exited during start-up; see $KAFKA_LOG"
    fi
    if port_open "$KAFKA_HOST" "$KAFKA_PORT" && kafka_ping 5 >/dev/null 2>&1; then
      kafka_scram_user
      say "Kafka ready (pid $pid) on $WEIR_BOOTSTRAP (SASL_SSL $WEIR_BOOTSTRAP_SASL_SSL, mTLS $WEIR_BOOTSTRAP_MTLS)"
      return 0
    fi
    sleep 0.5
  done
  kafka_log_tail
  die "Kafka (pid $pid) did not answer a metadata request on $WEIR_BOOTSTRAP within ${KAFKA_READY_TIMEOUT}s; see $KAFKA_LOG (it is still running; './dev down' stops it)"
}

# The SCRAM user of the SASL_SSL listener. Credentials live in the
# cluster's metadata, so a marker in the data directory says they exist
# (a new data directory gets them again); a broker already up has them.
kafka_scram_user() {
  local marker="$KAFKA_DATA/.scram-$KAFKA_SCRAM_USER"
  [[ -f "$marker" ]] && return 0
  if ! kafka_tool org.apache.kafka.tools.ConfigCommand --bootstrap-server "$WEIR_BOOTSTRAP" --alter \
      --add-config "SCRAM-SHA-512=[iterations=4096,password=$KAFKA_SCRAM_PASSWORD]" \
      --entity-type users --entity-name "$KAFKA_SCRAM_USER" >"$KAFKA_DIR/scram.log" 2>&1; then
    cat "$KAFKA_DIR/scram.log" >&2
    die "creating the SCRAM user $KAFKA_SCRAM_USER failed"
  fi
  touch "$marker"
}

kafka_down() {
  local pid
  if ! pid="$(kafka_running_pid)"; then
    rm -f "$KAFKA_PID"
    say "Kafka not running"
    return 0
  fi
  say "stopping Kafka (pid $pid)"
  stop_processes "Kafka (pid %s)" "$pid"
  rm -f "$KAFKA_PID"
}

kafka_status() {
  local pid
  if pid="$(kafka_running_pid)"; then
    if kafka_ping 3 >/dev/null 2>&1; then
      echo "kafka     running  pid $pid  $WEIR_BOOTSTRAP (controller $KAFKA_HOST:$KAFKA_CONTROLLER_PORT, proxied $WEIR_PROXIED_LISTENER advertised as $WEIR_BOOTSTRAP_PROXIED, SASL_SSL $WEIR_BOOTSTRAP_SASL_SSL, mTLS $WEIR_BOOTSTRAP_MTLS)  log $KAFKA_LOG"
    else
      echo "kafka     running  pid $pid  $WEIR_BOOTSTRAP (NOT answering metadata requests)  log $KAFKA_LOG"
    fi
  else
    echo "kafka     stopped"
  fi
}

# ---------------------------------------------------------------------------
# The 3-node cluster (./dev up --brokers 3): replicated topics, broker failures
# ---------------------------------------------------------------------------
kafka3_node_dir() { echo "$KAFKA3_DIR/node$1"; }
kafka3_props() { echo "$(kafka3_node_dir "$1")/server.properties"; }
kafka3_log() { echo "$(kafka3_node_dir "$1")/kafka.log"; }
kafka3_pid_file() { echo "$(kafka3_node_dir "$1")/kafka.pid"; }

kafka3_voters() {
  local i out=""
  for ((i = 1; i <= KAFKA3_NODES; i++)); do out+="${out:+,}$i@${KAFKA_HOST}:$(kafka3_controller_port "$i")"; done
  echo "$out"
}

kafka3_write_props() {
  local n="$1" dir port cport
  dir="$(kafka3_node_dir "$n")" port="$(kafka3_port "$n")" cport="$(kafka3_controller_port "$n")"
  mkdir -p "$dir/data"
  cat >"$dir/server.properties.tmp" <<EOP
# Generated by ./dev up --brokers 3 -- do not edit (edit the dev script instead).
# Node $n of a 3-node KRaft cluster: combined broker + controller, 127.0.0.1 only.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$(kafka3_voters)
listeners=PLAINTEXT://${KAFKA_HOST}:${port},CONTROLLER://${KAFKA_HOST}:${cport}
advertised.listeners=PLAINTEXT://${KAFKA_HOST}:${port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data

# Three replicas of everything; an acknowledged (acks=all) write is on at
# least two brokers, so it survives losing one.
$(kafka_props_topics 3 2)

$(kafka_props_footprint num.replica.fetchers=1)
EOP
  mv "$dir/server.properties.tmp" "$dir/server.properties"
}

# Formats the nodes given as arguments (those without meta.properties), in
# parallel; all with the cluster id in .cache/kafka3/cluster.id.
kafka3_format_storage() {
  local n todo=() pids=() rc=0
  for n in "$@"; do
    [[ -f "$(kafka3_node_dir "$n")/data/meta.properties" ]] || todo+=("$n")
  done
  ((${#todo[@]} > 0)) || return 0
  kafka_cluster_id "$KAFKA3_CLUSTER_ID_FILE"
  say "formatting Kafka storage of node(s) ${todo[*]} (3-node cluster id $(cat "$KAFKA3_CLUSTER_ID_FILE"))"
  for n in "${todo[@]}"; do
    kafka_tool kafka.tools.StorageTool format --ignore-formatted \
      -t "$(cat "$KAFKA3_CLUSTER_ID_FILE")" -c "$(kafka3_props "$n")" \
      >"$(kafka3_node_dir "$n")/format.log" 2>&1 &
    pids+=("$!")
  done
  for n in "${!pids[@]}"; do
    if ! wait "${pids[$n]}"; then
      cat "$(kafka3_node_dir "${todo[$n]}")/format.log" >&2
      rc=1
    fi
  done
  ((rc == 0)) || die "kafka.tools.StorageTool format failed (3-node cluster)"
}

# Prints the pid of node $1 if the process we started is alive, else fails.
kafka3_running_pid() { pid_from_file "$(kafka3_pid_file "$1")" "kafka.Kafka $(kafka3_props "$1")"; }

# Node $1 answers a metadata request listing all the cluster's brokers
# (a fenced broker, e.g. one still catching up after a restart, is not listed).
kafka3_ready() {
  local out
  out="$(python3 "$KAFKA_PING" "${KAFKA_HOST}:$(kafka3_port "$1")" "${2:-5}" 2>/dev/null)" || return 1
  [[ "$out" == *" brokers=${KAFKA3_NODES} "* ]]
}

kafka3_start_node() {
  kafka_start_jvm "$(kafka3_props "$1")" "$(kafka3_log "$1")" "$(kafka3_node_dir "$1")" "$(kafka3_pid_file "$1")" \
    "./dev up --brokers 3: starting node $1"
}

kafka3_up() {
  local n pid port cport start=() pids=() t0
  t0="$(now)"
  for ((n = 1; n <= KAFKA3_NODES; n++)); do
    if pid="$(kafka3_running_pid "$n")"; then
      pids[n]="$pid"
      continue
    fi
    rm -f "$(kafka3_pid_file "$n")"
    port="$(kafka3_port "$n")" cport="$(kafka3_controller_port "$n")"
    port_open "$KAFKA_HOST" "$port" \
      && die "port $KAFKA_HOST:$port (3-node cluster, node $n) is in use by a process ./dev did not start (set WEIR_KAFKA3_PORT)"
    port_open "$KAFKA_HOST" "$cport" \
      && die "controller port $KAFKA_HOST:$cport (3-node cluster, node $n) is in use by a process ./dev did not start (set WEIR_KAFKA3_CONTROLLER_PORT)"
    start+=("$n")
  done
  if ((${#start[@]} == 0)); then
    local ok=1
    for ((n = 1; n <= KAFKA3_NODES; n++)); do kafka3_ready "$n" 5 || ok=0; done
    if ((ok)); then
      say "Kafka 3-node cluster already running (pids ${pids[*]}) on $WEIR_BOOTSTRAP3"
      return 0
    fi
    say "Kafka 3-node cluster (pids ${pids[*]}) is running but not every node lists 3 brokers yet; waiting"
  else
    kafka_fetch_jars
    for n in "${start[@]}"; do kafka3_write_props "$n"; done
    kafka3_format_storage "${start[@]}"
    say "starting Kafka 3-node cluster node(s) ${start[*]} on $WEIR_BOOTSTRAP3 (logs: $KAFKA3_DIR/node*/kafka.log)"
    for n in "${start[@]}"; do
      kafka3_start_node "$n"
      pids[n]="$(cat "$(kafka3_pid_file "$n")")"
    done
  fi
  local deadline=$((SECONDS + KAFKA_READY_TIMEOUT)) waiting
  while ((SECONDS < deadline)); do
    waiting=()
    for ((n = 1; n <= KAFKA3_NODES; n++)); do
      if ! pid_alive "${pids[n]}"; then
        log_tail "$(kafka3_log "$n")"
        rm -f "$(kafka3_pid_file "$n")"
        die "Kafka node $n (pid ${pids[n]}) of the 3-node cluster exited; see $(kafka3_log "$n")"
      fi
      kafka3_ready "$n" 5 || waiting+=("$n")
    done
    if ((${#waiting[@]} == 0)); then
      say "Kafka 3-node cluster ready in $(elapsed "$t0") (pids ${pids[*]}) on $WEIR_BOOTSTRAP3, controllers $(kafka3_voters)"
      return 0
    fi
    sleep 0.5
  done
  for n in "${waiting[@]}"; do log_tail "$(kafka3_log "$n")"; done
  die "Kafka 3-node cluster: node(s) ${waiting[*]} did not list all 3 brokers within ${KAFKA_READY_TIMEOUT}s (they are still running; './dev down' stops them)"
}

# Stops every running node at once (one by one, the last ones would wait for
# a controller quorum that is gone).
kafka3_down() {
  local n pid pids=()
  for ((n = 1; n <= KAFKA3_NODES; n++)); do
    if pid="$(kafka3_running_pid "$n")"; then
      pids+=("$pid")
    else
      rm -f "$(kafka3_pid_file "$n")"
    fi
  done
  if ((${#pids[@]} == 0)); then
    [[ -d "$KAFKA3_DIR" ]] && say "Kafka 3-node cluster not running"
    return 0
  fi
  say "stopping Kafka 3-node cluster (pids ${pids[*]})"
  stop_processes "Kafka 3-node cluster pids %s" "${pids[@]}"
  for ((n = 1; n <= KAFKA3_NODES; n++)); do rm -f "$(kafka3_pid_file "$n")"; done
}

kafka3_status() {
  local n pid
  [[ -d "$KAFKA3_DIR" ]] || return 0
  for ((n = 1; n <= KAFKA3_NODES; n++)); do
    if pid="$(kafka3_running_pid "$n")"; then
      if kafka3_ready "$n" 3; then
        echo "kafka3-$n  running  pid $pid  $KAFKA_HOST:$(kafka3_port "$n") (controller $KAFKA_HOST:$(kafka3_controller_port "$n"))  log $(kafka3_log "$n")"
      else
        echo "kafka3-$n  running  pid $pid  $KAFKA_HOST:$(kafka3_port "$n") (does not list 3 live brokers)  log $(kafka3_log "$n")"
      fi
    else
      echo "kafka3-$n  stopped"
    fi
  done
}
