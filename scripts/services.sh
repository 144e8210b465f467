# shellcheck shell=bash
# ./dev up, down, status and env: the services of scripts/kafka.sh,
# scripts/postgres.sh and scripts/monitoring.sh together.
print_env() {
  cat <<EOF

${C_GREEN}weir dev services are up${C_RESET}
  WEIR_BOOTSTRAP=$WEIR_BOOTSTRAP
  WEIR_BOOTSTRAP_PROXIED=$WEIR_BOOTSTRAP_PROXIED (only while a test's proxy listens there, forwarding to the broker's listener WEIR_PROXIED_LISTENER=$WEIR_PROXIED_LISTENER)
  WEIR_BOOTSTRAP_SASL_SSL=$WEIR_BOOTSTRAP_SASL_SSL (SCRAM-SHA-512, user $WEIR_KAFKA_SCRAM_USER, password in WEIR_KAFKA_SCRAM_PASSWORD)
  WEIR_BOOTSTRAP_MTLS=$WEIR_BOOTSTRAP_MTLS (client certificate required)
  WEIR_TLS_DIR=$WEIR_TLS_DIR (ca.pem, client.pem, client.key: a throwaway CA)
  WEIR_PG_URL=$WEIR_PG_URL
  kafka log:     $KAFKA_LOG
  postgres log:  $PG_LOG
  (export them: eval "\$(./dev env)")
EOF
}

print_env3() {
  local n
  cat <<EOF

${C_GREEN}weir 3-broker Kafka cluster is up${C_RESET} (KRaft, each node broker + controller)
  WEIR_BOOTSTRAP3=$WEIR_BOOTSTRAP3
  controllers:   $(kafka3_voters)
EOF
  for ((n = 1; n <= KAFKA3_NODES; n++)); do
    echo "  node $n:        $KAFKA_HOST:$(kafka3_port "$n")  pid file $(kafka3_pid_file "$n")  log $(kafka3_log "$n")"
  done
  echo "  (point weir or a test at it: WEIR_BOOTSTRAP=\$WEIR_BOOTSTRAP3)"
}


services_up() {
  kafka_up
  pg_up
}

services_down() {
  local rc=0
  prom_down || rc=1
  kafka3_down || rc=1
  kafka_down || rc=1
  pg_down || rc=1
  return "$rc"
}

# `--brokers N` of up/down: 1 (the default) is the single broker with
# PostgreSQL, 3 the separate 3-node cluster only.
parse_brokers() {
  local brokers=1
  while (($# > 0)); do
    case "$1" in
      --brokers) (($# > 1)) || die "--brokers needs a value (1 or 3)"; brokers="$2"; shift 2 ;;
      --brokers=*) brokers="${1#--brokers=}"; shift ;;
      *) die "unknown argument: $1 (see ./dev help)" ;;
    esac
  done
  case "$brokers" in
    1 | 3) echo "$brokers" ;;
    *) die "--brokers $brokers: only 1 (single broker + PostgreSQL) or 3 (3-node cluster) are supported" ;;
  esac
}

cmd_up() {
  local brokers
  take_monitoring_flag "$@"
  brokers="$(parse_brokers ${ARGS[@]+"${ARGS[@]}"})"
  if ((brokers == 3)); then
    ensure_prereqs "${PREREQS_SERVICES[@]}"
    # `|| return`: under `./dev test`'s steps (`cmd || rc=$?`) set -e is
    # off, and a service that failed to start must fail the step.
    with_lock kafka3_up || return
    print_env3
    return 0
  fi
  ensure_prereqs "${PREREQS_SERVICES[@]}"
  with_lock services_up || return
  if ((MONITORING)); then
    ensure_prereqs "${PREREQS_MONITORING[@]}"
    with_lock prom_up || return
  fi
  print_env
}


cmd_down() {
  local brokers
  brokers="$(parse_brokers "$@")"
  if ((brokers == 3)); then
    with_lock kafka3_down || return
    return 0
  fi
  with_lock services_down
}

cmd_status() {
  kafka_status
  pg_status
  kafka3_status
  prom_status
}

cmd_env() {
  echo "export WEIR_BOOTSTRAP=$WEIR_BOOTSTRAP"
  echo "export WEIR_BOOTSTRAP_PROXIED=$WEIR_BOOTSTRAP_PROXIED"
  echo "export WEIR_PROXIED_LISTENER=$WEIR_PROXIED_LISTENER"
  echo "export WEIR_BOOTSTRAP_SASL_SSL=$WEIR_BOOTSTRAP_SASL_SSL"
  echo "export WEIR_BOOTSTRAP_MTLS=$WEIR_BOOTSTRAP_MTLS"
  echo "export WEIR_TLS_DIR=$WEIR_TLS_DIR"
  echo "export WEIR_KAFKA_SCRAM_USER=$WEIR_KAFKA_SCRAM_USER"
  echo "export WEIR_KAFKA_SCRAM_PASSWORD=$WEIR_KAFKA_SCRAM_PASSWORD"
  echo "export WEIR_BOOTSTRAP3=$WEIR_BOOTSTRAP3"
  echo "export WEIR_PG_URL=$WEIR_PG_URL"
}

