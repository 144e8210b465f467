# shellcheck shell=bash
# What every script of ./dev and benches/ shares: paths, cargo's features,
# messages, process and port checks, prerequisites, the lock of up/down and
# the Kafka command-line tools. Sourced, never run; sets no shell options.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"

# One target dir outside the clone and one cargo profile (dev): every other
# profile (release, bench) compiles RocksDB's C++ again (~15 min).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
# Every cargo command of ./dev and the benches builds with these features
# (the integration tests need ./dev up's services), so the library is built
# one way only and never twice. `cargo fmt` takes none.
CARGO_FEATURES=(--features integration)

# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------
if [[ -t 1 ]]; then
  C_BOLD=$'\e[1m' C_RED=$'\e[31m' C_GREEN=$'\e[32m' C_YELLOW=$'\e[33m' C_RESET=$'\e[0m'
else
  C_BOLD='' C_RED='' C_GREEN='' C_YELLOW='' C_RESET=''
fi
# How say and die mark their lines, and where say writes: ./dev's; the
# benches set theirs (benches/lib.sh).
SAY_MARK='==>' SAY_FD=1 DIE_MARK='error:'
say()  { printf '%s%s%s %s\n' "$C_BOLD" "$SAY_MARK" "$C_RESET" "$*" >&"$SAY_FD"; }
warn() { printf '%swarning:%s %s\n' "$C_YELLOW" "$C_RESET" "$*" >&2; }
die()  { printf '%s%s%s %s\n' "$C_RED" "$DIE_MARK" "$C_RESET" "$*" >&2; exit 1; }

# The last 20 lines of a log on stderr, under a header naming it.
log_tail() {
  echo "---- last 20 lines of $1 ----" >&2
  tail -n 20 "$1" >&2 2>/dev/null || true
}

# ---------------------------------------------------------------------------
# Processes, ports, time
# ---------------------------------------------------------------------------
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# Is a TCP port accepting connections? (bash /dev/tcp, no external tools)
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Is a process alive? (a zombie waiting to be reaped does not count)
pid_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state="$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# Prints the pid in FILE if that process is alive and its command line
# contains TEXT (against pid reuse: e.g. our java kafka.Kafka on our
# server.properties), else fails.
pid_from_file() { # FILE TEXT
  [[ -f "$1" ]] || return 1
  local pid
  pid="$(cat "$1" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$2" || return 1
  echo "$pid"
}

# Waits up to TENTHS tenths of a second for every PID to exit; fails if
# any is still alive then, those in LEFT.
LEFT=()
wait_exit() { # TENTHS PID...
  local tenths="$1" i pid
  shift
  for ((i = 0; ; i++)); do
    LEFT=()
    for pid in "$@"; do pid_alive "$pid" && LEFT+=("$pid"); done
    ((${#LEFT[@]} == 0)) && return 0
    ((i < tenths)) || return 1
    sleep 0.1
  done
}

# Stops PIDs at once: SIGTERM, up to 30 s, then SIGKILL and up to 5 s more;
# fails if any is left. WHAT, a printf format, names them with the pids
# ("Kafka (pid %s)").
stop_processes() { # WHAT PID...
  local what="$1"
  shift
  kill -TERM "$@" 2>/dev/null || true
  wait_exit 300 "$@" && return 0
  # shellcheck disable=SC2059 # the caller's format
  warn "$(printf "$what" "${LEFT[*]}") still running after 30s; sending SIGKILL"
  kill -KILL "${LEFT[@]}" 2>/dev/null || true
  wait_exit 50 "$@" && return 0
  # shellcheck disable=SC2059
  die "could not stop $(printf "$what" "${LEFT[*]}")"
}

now() { date +%s.%N; }
now_ms() { date +%s%3N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# Serialise up/down between concurrent ./dev calls (several engineers or CI
# on one checkout). Runs "$@" in a subshell holding the lock on fd 9; every
# daemon we start gets `9>&-` so it does not inherit (and keep) the lock.
with_lock() {
  mkdir -p "$CACHE"
  (
    exec 9>"$CACHE/.dev.lock"
    if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
      say "another ./dev up/down is running in this checkout; waiting for it"
      flock -w 600 9 || die "timed out waiting for $CACHE/.dev.lock"
    fi
    "$@"
  )
}

# ---------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------
# Each entry: "<debian package>:<check>" where check is a command name, or
# dpkg:<package>, or special checks handled in has_prereq.
PREREQS_SERVICES=(
  "default-jdk-headless:java17"
  "maven:mvn"
  "postgresql:pgserver"
  "python3:python3"
  "curl:curl"
  "openssl:openssl"
)
PREREQS_BUILD=(
  "clang:clang"
  "libclang-dev:libclang"
  "cmake:cmake"
  "make:make"
  "g++:g++"
  "pkg-config:pkg-config"
  # librdkafka's TLS and SASL (rdkafka's `ssl` feature links Debian's OpenSSL).
  "libssl-dev:libssl"
)

java_major() {
  local v
  v="$(java -version 2>&1 | awk -F'"' '/version/ { print $2; exit }')" || return 1
  v="${v#1.}"
  echo "${v%%[.+-]*}"
}

pg_bindir() {
  # Newest PostgreSQL server under /usr/lib/postgresql/<ver>/bin.
  local d best=""
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V); do
    [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && best="$d"
  done
  [[ -n "$best" ]] && echo "$best"
}

has_prereq() {
  case "$1" in
    java17) command -v java >/dev/null 2>&1 && (( $(java_major || echo 0) >= 17 )) ;;
    pgserver) [[ -n "$(pg_bindir)" ]] ;;
    pyvenv) python3 -c 'import ensurepip, venv' >/dev/null 2>&1 ;;
    libssl)
      if command -v dpkg >/dev/null 2>&1; then
        dpkg -s libssl-dev >/dev/null 2>&1
      else
        pkg-config --exists openssl 2>/dev/null
      fi ;;
    libclang)
      if command -v dpkg >/dev/null 2>&1; then
        dpkg -s libclang-dev >/dev/null 2>&1
      else
        compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null || compgen -G '/usr/lib*/libclang*.so*' >/dev/null
      fi ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

ensure_prereqs() {
  local entry pkg check missing=()
  for entry in "$@"; do
    pkg="${entry%%:*}" check="${entry#*:}"
    has_prereq "$check" || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    die "missing prerequisites: ${missing[*]} (no apt-get on this system: install them with your package manager; Java must be >= 17)"
  fi
  if [[ $EUID -ne 0 ]] && ! command -v sudo >/dev/null 2>&1; then
    die "missing prerequisites: ${missing[*]}; not root and no sudo: run 'apt-get install -y --no-install-recommends ${missing[*]}' as root"
  fi
  say "installing missing prerequisites: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! as_root apt-get install -y --no-install-recommends "${missing[@]}"; then
    say "install failed; running apt-get update and retrying"
    as_root apt-get update
    as_root apt-get install -y --no-install-recommends "${missing[@]}"
  fi
  for entry in "$@"; do
    pkg="${entry%%:*}" check="${entry#*:}"
    has_prereq "$check" || die "prerequisite still missing after install: $pkg"
  done
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    if curl -fsS --max-time 10 -o /dev/null https://sh.rustup.rs 2>/dev/null; then
      say "cargo not found: installing Rust with rustup (https://sh.rustup.rs)"
      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
        | sh -s -- -y --profile minimal --component rustfmt,clippy
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      die "cargo not found and https://sh.rustup.rs is not reachable: install Rust with rustup (https://rustup.rs), then re-run"
    fi
  fi
}

ensure_build_prereqs() {
  ensure_prereqs "${PREREQS_BUILD[@]}"
  ensure_rust
}

# ---------------------------------------------------------------------------
# Kafka's command-line tools, on the jars ./dev up fetches (scripts/kafka.sh)
# ---------------------------------------------------------------------------
KAFKA_DIR="$CACHE/kafka"
KAFKA_TOOLS_LOG4J="$ROOT/scripts/kafka/log4j2-tools.properties"

# Run a Kafka CLI class from the cached jars in KAFKA_LIBS (quiet logging on
# stderr, stdout parseable).
kafka_tool() {
  local class="$1"; shift
  java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" \
    -cp "$KAFKA_LIBS/*" "$class" "$@"
}

# Names of the topics on BOOTSTRAP that GREP_ARGS select, comma-separated.
kafka_topics_matching() { # BOOTSTRAP GREP_ARGS...
  local bootstrap="$1"
  shift
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --list 2>/dev/null |
    grep "$@" | paste -sd, -
}
