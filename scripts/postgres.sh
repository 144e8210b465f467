# shellcheck shell=bash
# PostgreSQL for development and tests (`./dev up`): a cluster of its own
# under .cache/pg, TLS on with the certificates of scripts/kafka.sh's
# throwaway CA, a weir role and database.
PG_PORT="${WEIR_PG_PORT:-5433}"
PG_HOST=127.0.0.1
PG_DIR="$CACHE/pg"
PG_DATA="$PG_DIR/data"
PG_SOCK="$PG_DIR/run"
PG_LOG="$PG_DIR/postgres.log"
PG_OS_USER=postgres
export WEIR_PG_URL="postgres://weir:weir@${PG_HOST}:${PG_PORT}/weir"

PG_BIN=""
pg_init_bin() {
  [[ -n "$PG_BIN" ]] && return 0
  PG_BIN="$(pg_bindir)" || die "no PostgreSQL server found under /usr/lib/postgresql/*/bin (install the 'postgresql' package)"
}

# Run a PostgreSQL binary as the unprivileged OS user (initdb refuses root).
pg_run() {
  local bin="$1"; shift
  if [[ $EUID -eq 0 ]]; then
    runuser -u "$PG_OS_USER" -- "$PG_BIN/$bin" "$@"
  else
    "$PG_BIN/$bin" "$@"
  fi
}

pg_prepare_dirs() {
  mkdir -p "$PG_DIR" "$PG_SOCK"
  if [[ $EUID -eq 0 ]]; then
    id "$PG_OS_USER" >/dev/null 2>&1 || die "OS user '$PG_OS_USER' does not exist (it comes with the postgresql package)"
    # The postgres user must be able to traverse every parent directory.
    local d="$PG_DIR"
    while [[ "$d" != "/" ]]; do
      if ! runuser -u "$PG_OS_USER" -- test -x "$d" 2>/dev/null; then
        chmod o+x "$d" || die "cannot make $d traversable for the '$PG_OS_USER' user"
      fi
      d="$(dirname "$d")"
    done
    chown "$PG_OS_USER": "$PG_DIR" "$PG_SOCK"
    [[ -d "$PG_DATA" ]] && chown -R "$PG_OS_USER": "$PG_DATA"
    touch "$PG_LOG" && chown "$PG_OS_USER": "$PG_LOG"
  fi
  chmod 700 "$PG_SOCK"
  chmod 755 "$PG_DIR"
  (( ${#PG_SOCK} < 90 )) || die "socket dir path too long for a unix socket: $PG_SOCK"
}

pg_running() {
  pg_init_bin
  [[ -f "$PG_DATA/postmaster.pid" ]] || return 1
  pg_run pg_ctl status -D "$PG_DATA" >/dev/null 2>&1
}

pg_pid() { head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null; }
# Port the running server listens on (line 4 of postmaster.pid).
pg_running_port() { sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null; }

pg_psql() {
  pg_run psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres "$@"
}

# The server's TLS key and certificate (the broker's, from the throwaway
# CA: 127.0.0.1 and localhost), copied where the server's OS user owns them
# (PostgreSQL refuses a key others can read).
pg_tls_files() {
  tls_setup
  local d="$PG_DIR/tls"
  mkdir -p "$d"
  cp "$TLS_DIR/server.pem" "$d/server.crt"
  cp "$TLS_DIR/server.key" "$d/server.key"
  chmod 700 "$d"
  chmod 600 "$d/server.key"
  if [[ $EUID -eq 0 ]]; then chown -R "$PG_OS_USER": "$d"; fi
}

pg_up() {
  local was_running=0
  pg_init_bin
  pg_prepare_dirs
  if pg_running; then
    local port
    port="$(pg_running_port)"
    if [[ "$port" != "$PG_PORT" ]]; then
      die "PostgreSQL ($PG_DATA) already runs on port $port, not WEIR_PG_PORT=$PG_PORT; run './dev down' first"
    fi
    # Started by an older ./dev, without TLS (the sink's TLS tests need it).
    if [[ "$(pg_psql -d postgres -tAc 'SHOW ssl' 2>/dev/null)" != on ]]; then
      die "the running PostgreSQL was started without TLS by an older ./dev; restart it: ./dev down && ./dev up"
    fi
    say "PostgreSQL already running (pid $(pg_pid)) on $PG_HOST:$PG_PORT"
    was_running=1
  else
    if port_open "$PG_HOST" "$PG_PORT"; then
      die "port $PG_HOST:$PG_PORT is in use by a process ./dev did not start (set WEIR_PG_PORT to use another port)"
    fi
    if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
      say "initialising PostgreSQL cluster in $PG_DATA ($("$PG_BIN/postgres" --version))"
      rm -rf "$PG_DATA"
      mkdir -p "$PG_DATA"
      [[ $EUID -eq 0 ]] && chown "$PG_OS_USER": "$PG_DATA"
      chmod 700 "$PG_DATA"
      # trust only for the local unix socket; passwords (scram) over TCP.
      pg_run initdb -D "$PG_DATA" -U postgres -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null \
        || die "initdb failed"
      cat >>"$PG_DATA/postgresql.conf" <<EOF

# ---- added by ./dev up ----
listen_addresses = '127.0.0.1'
password_encryption = 'scram-sha-256'
shared_buffers = 128MB
max_connections = 100
fsync = on
logging_collector = off
log_min_messages = warning
EOF
    fi
    pg_tls_files
    # TLS on (clients choose with sslmode; password auth either way). In
    # postgresql.conf, not on the command line, so that a test restarting
    # the server (tests/sink_common/dev_postgres.rs) keeps it.
    if ! grep -q '^# ---- TLS, added by ./dev up ----' "$PG_DATA/postgresql.conf"; then
      cat >>"$PG_DATA/postgresql.conf" <<EOF

# ---- TLS, added by ./dev up ----
ssl = on
ssl_cert_file = '$PG_DIR/tls/server.crt'
ssl_key_file = '$PG_DIR/tls/server.key'
EOF
    fi
    say "starting PostgreSQL on $PG_HOST:$PG_PORT with TLS (log: $PG_LOG)"
    if ! pg_run pg_ctl -D "$PG_DATA" -l "$PG_LOG" -w -t 60 \
        -o "-p $PG_PORT -k $PG_SOCK -c listen_addresses=$PG_HOST" start >/dev/null 9>&-; then
      log_tail "$PG_LOG"
      die "PostgreSQL failed to start; see $PG_LOG"
    fi
  fi
  # Role and database (idempotent, cheap).
  pg_psql -d postgres >/dev/null <<'SQL' || die "could not create role/database weir"
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'weir') THEN
    CREATE ROLE weir LOGIN CREATEDB PASSWORD 'weir';
  END IF;
END
$$;
SQL
  if [[ "$(pg_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'weir'")" != 1 ]]; then
    pg_psql -d postgres -c "CREATE DATABASE weir OWNER weir" >/dev/null || die "could not create database weir"
  fi
  ((was_running)) || say "PostgreSQL ready (pid $(pg_pid)) on $PG_HOST:$PG_PORT"
}

pg_down() {
  pg_init_bin
  if ! pg_running; then
    say "PostgreSQL not running"
    return 0
  fi
  say "stopping PostgreSQL (pid $(pg_pid))"
  pg_run pg_ctl -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null || die "pg_ctl stop failed; see $PG_LOG"
}

pg_status() {
  if pg_running; then
    echo "postgres  running  pid $(pg_pid)  $PG_HOST:$(pg_running_port) (socket $PG_SOCK)  log $PG_LOG"
  else
    echo "postgres  stopped"
  fi
}
