#!/usr/bin/env bash
# The local stack without Docker: a Python virtualenv with moto, a PostgreSQL (the one in
# DATABASE_URL when it answers, else a throwaway cluster of our own) and the moto server
# for SQS and KMS on loopback.
#
#   scripts/stack.sh deps    install the system packages the stack needs, if missing
#                            (PostgreSQL server, psql, Python venv, openssl, PgBouncer; as root or with sudo)
#   scripts/stack.sh venv    create/refresh .venv from requirements-dev.txt
#   scripts/stack.sh sam-venv  create/refresh .venv-sam (the SAM CLI) from requirements-sam.txt
#   scripts/stack.sh up      deps + venv, start what is missing; write .stack/env (source it)
#   scripts/stack.sh down    stop and remove what `up` started
#   scripts/stack.sh env     print .stack/env
#
# Settings: DATABASE_URL (use this server), STACK_PG_PORT (default 55432),
# STACK_PG_SHARED_BUFFERS (the cluster's shared_buffers when it starts, default 128MB,
# PostgreSQL's own; RDS gives a quarter of the instance's memory: BENCHMARKS.md, "Growth"),
# MOTO_PORT (default 5055), AWS_REGION (default us-east-1), MAX_RECEIVE_COUNT (redrive,
# default 3), VISIBILITY_TIMEOUT (seconds, default 2: failed messages come back fast).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.stack"
venv="$root/.venv"
pg_port=${STACK_PG_PORT:-55432}
moto_port=${MOTO_PORT:-5055}
region=${AWS_REGION:-us-east-1}
# The cluster lives outside the checkout: the server runs as `postgres` when we are root,
# and that user cannot enter /root.
pg_home="${TMPDIR:-/tmp}/login-etl-pg-$(printf '%s' "$root" | cksum | cut -d' ' -f1)"

log() { printf 'stack: %s\n' "$*" >&2; }

find_pg_bin() {
  local name=$1 dir
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/$name" ] && { echo "$dir/$name"; return; }
  done
  return 1
}

pg_bin() {
  find_pg_bin "$1" || { log "PostgreSQL server tools ($1) not found: run scripts/stack.sh deps"; exit 1; }
}

# Debian/Ubuntu packages for what is missing. Needs root or sudo; without either it says
# what to install and stops.
cmd_deps() {
  local packages=()
  find_pg_bin initdb >/dev/null || packages+=(postgresql)
  command -v psql >/dev/null 2>&1 || find_pg_bin psql >/dev/null || packages+=(postgresql-client)
  command -v python3 >/dev/null 2>&1 || packages+=(python3)
  python3 -c "import ensurepip, venv" >/dev/null 2>&1 || packages+=(python3-venv)
  # The TLS tests make a CA and a server certificate.
  command -v openssl >/dev/null 2>&1 || packages+=(openssl)
  # The pooler tests put a throwaway PgBouncer (transaction mode) in front of a test
  # database (testkit's PgBouncer), each on a free port of its own; a service the package
  # may start (on 6432) is left alone.
  command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || packages+=(pgbouncer)
  if [ ${#packages[@]} -gt 0 ]; then
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
      command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && sudo=(sudo -n) || {
        log "missing: ${packages[*]}; install them (apt-get install ${packages[*]}) or run as root"; exit 1; }
    fi
    command -v apt-get >/dev/null 2>&1 || { log "missing: ${packages[*]}; no apt-get here: install them by hand"; exit 1; }
    log "installing ${packages[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    # Debian's package starts its own cluster on 5432; ours is separate, leave that alone.
  fi
  # The checks of `make test` (formatting, clippy) are rustup components.
  if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^clippy' && rustup component list --installed 2>/dev/null | grep -q '^rustfmt' ||
      rustup component add rustfmt clippy >/dev/null 2>&1 || log "could not add rustfmt/clippy through rustup"
  fi
}

# From /, in a subshell: as `postgres`, initdb and pg_ctl would complain that they cannot
# enter the checkout (e.g. under /root) when started from it.
as_pg() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# A virtualenv (default .venv) from a requirements file (default requirements-dev.txt),
# reinstalled when that file changes.
cmd_venv() {
  local dir=${1:-$venv} requirements=${2:-$root/requirements-dev.txt}
  local stamp="$dir/.requirements.sha"
  local want; want=$(sha1sum "$requirements" | cut -d' ' -f1)
  if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return; fi
  log "installing Python tools into ${dir#"$root"/} (pip; the first time about half a minute for .venv, two for .venv-sam)"
  python3 -m venv "$dir"
  # pip's own lines are counted, not shown (a line of progress every 10 s); warnings and errors are shown.
  "$root/scripts/progress.sh" pip packages \
    '^(Looking in|Collecting|Requirement already satisfied|Installing collected packages:|Successfully installed|Building wheels for collected packages|Using cached|Downloading|Processing) |^ +(Downloading|Using cached|Preparing metadata|Installing build dependencies|Getting requirements to build|Building wheel|Created wheel|Stored in directory|Attempting uninstall|Found existing installation|Uninstalling|Successfully uninstalled)' \
    "$dir/bin/pip" install --progress-bar off --disable-pip-version-check -r "$requirements"
  echo "$want" >"$stamp"
}

reachable() { "$(pg_bin pg_isready)" -q -d "$1" -t 3 >/dev/null 2>&1; }

start_postgres() {
  if [ -n "${DATABASE_URL:-}" ] && reachable "$DATABASE_URL"; then
    log "using the PostgreSQL at DATABASE_URL"
    echo "$DATABASE_URL"; return
  fi
  [ -n "${DATABASE_URL:-}" ] && log "DATABASE_URL does not answer; starting a throwaway cluster"
  local url="postgres://postgres@127.0.0.1:$pg_port/login_etl"
  if ! reachable "$url"; then
    mkdir -p "$pg_home"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$pg_home"; fi
    if [ ! -f "$pg_home/data/PG_VERSION" ]; then
      log "initdb $pg_home/data"
      as_pg "$(pg_bin initdb)" -D "$pg_home/data" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null
    fi
    local buffers=${STACK_PG_SHARED_BUFFERS:-128MB}
    [[ $buffers =~ ^[0-9]+(kB|MB|GB)$ ]] || { log "STACK_PG_SHARED_BUFFERS: a size such as 4GB or 512MB, not '$buffers'"; exit 2; }
    log "starting PostgreSQL on 127.0.0.1:$pg_port (shared_buffers $buffers)"
    as_pg "$(pg_bin pg_ctl)" -D "$pg_home/data" -l "$pg_home/server.log" -w -t 30 start \
      -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_home -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=$buffers" >/dev/null
    echo "$pg_home" >"$state/pg_home"
  fi
  if ! "$(pg_bin psql)" -qAt -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres \
    -c "SELECT 1 FROM pg_database WHERE datname = 'login_etl'" | grep -q 1; then
    "$(pg_bin createdb)" -h 127.0.0.1 -p "$pg_port" -U postgres login_etl
  fi
  echo "$url"
}

moto_up() {
  "$venv/bin/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
    "http://127.0.0.1:$moto_port/moto-api/" >/dev/null 2>&1
}

start_moto() {
  if moto_up; then return; fi
  log "starting moto (SQS, KMS) on 127.0.0.1:$moto_port"
  nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$state/moto.log" 2>&1 &
  echo $! >"$state/moto.pid"
  for _ in $(seq 1 100); do moto_up && return; sleep 0.2; done
  log "moto did not come up; see $state/moto.log"; exit 1
}

cmd_up() {
  mkdir -p "$state"
  cmd_deps
  cmd_venv
  local db_url; db_url=$(start_postgres)
  start_moto
  cat >"$state/env" <<EOF
export DATABASE_URL='$db_url'
export AWS_ENDPOINT_URL='http://127.0.0.1:$moto_port'
export AWS_REGION='$region'
export AWS_DEFAULT_REGION='$region'
export AWS_ACCESS_KEY_ID='testing'
export AWS_SECRET_ACCESS_KEY='testing'
# The failure path, scaled to the local queue's ${VISIBILITY_TIMEOUT:-2} s visibility: a batch the
# database cannot take is hidden 2, 4, 8 … up to 60 s (the template: 300 s up to 41,400 s).
export VISIBILITY_BACKOFF_BASE_SECONDS='${VISIBILITY_TIMEOUT:-2}'
export VISIBILITY_BACKOFF_MAX_SECONDS='60'
EOF
  # Queues and the KMS key alias (idempotent; a restarted moto starts empty).
  (source "$state/env" && "$venv/bin/python" "$root/scripts/local_aws.py" setup \
    --max-receive-count "${MAX_RECEIVE_COUNT:-3}" --visibility-timeout "${VISIBILITY_TIMEOUT:-2}") >>"$state/env"
  log "up; environment in .stack/env"
}

cmd_down() {
  if [ -f "$state/moto.pid" ]; then
    kill "$(cat "$state/moto.pid")" 2>/dev/null || true
    rm -f "$state/moto.pid"
    log "moto stopped"
  fi
  if [ -f "$state/pg_home" ]; then
    local home; home=$(cat "$state/pg_home")
    as_pg "$(pg_bin pg_ctl)" -D "$home/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$home" "$state/pg_home"
    log "throwaway PostgreSQL stopped and removed"
  fi
  rm -f "$state/env"
}

case "${1:-}" in
  deps) cmd_deps ;;
  venv) cmd_deps; cmd_venv ;;
  sam-venv) cmd_deps; cmd_venv "$root/.venv-sam" "$root/requirements-sam.txt" ;;
  up) cmd_up ;;
  down) cmd_down ;;
  env) cat "$state/env" ;;
  *) echo "usage: $0 deps|venv|sam-venv|up|down|env" >&2; exit 2 ;;
esac
