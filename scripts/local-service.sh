#!/usr/bin/env bash
# The vault service on the local stack, on the same path as in AWS: `pii-vault` signs its
# request and POSTs it to a function URL; `cargo lambda watch` serves that URL and the
# Lambda runtime API, and the service answers through the runtime API. cargo-lambda's URLs
# carry no IAM identity, so the service runs as `pii-vault-service-local` (crates/local-tools:
# the same service, which takes PII_VAULT_LOCAL_IDENTITY as the caller of a request without
# an identity); the deployed `pii-vault-service` has no such path.
#
#   scripts/local-service.sh up     migrate, demo logins, (re)start the service; adds
#                                   PII_VAULT_URL to .stack/env
#   scripts/local-service.sh down   stop it
#
# Settings: VAULT_PORT (default 9100), QUARANTINE_RETENTION_DAYS (passed on; unset or
# empty, the service keeps 14 days), VAULT_RETENTION_DAYS (passed on; unset or empty,
# `pii-vault admin expire` keeps values while a login carries them), and those of scripts/stack.sh. The replay queue and the DLQ
# (REPLAY_QUEUE_URL, DEAD_LETTER_QUEUE_URL) come from .stack/env.
set -euo pipefail
cd "$(dirname "$0")/.."
state=.stack
port=${VAULT_PORT:-9100}

log() { printf 'vault-service: %s\n' "$*" >&2; }

stop() {
  local name
  for name in vault-service watch; do
    if [ -f "$state/$name.pid" ]; then
      kill "$(cat "$state/$name.pid")" 2>/dev/null || true
      rm -f "$state/$name.pid"
    fi
  done
}

up() {
  [ -f "$state/env" ] || { log "the stack is not up: run scripts/stack.sh up first"; exit 1; }
  source "$state/env"
  # A line of progress every 10 s instead of cargo's line per crate (`make run` has built them).
  scripts/progress.sh "cargo build" crates '^ *(Compiling|Downloaded|Downloading|Finished|Updating|Locking|Adding) ' \
    cargo build --bin migrate --bin pii-vault-service-local --bin pii-vault
  target/debug/migrate >/dev/null
  # Demo logins in the roles (no password: the throwaway cluster trusts loopback).
  for login in writer analyst auditor vault_service; do
    psql "$DATABASE_URL" -qAtX -c "DO \$\$ BEGIN CREATE ROLE login_etl_demo_$login LOGIN IN ROLE login_etl_$login;
               EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" >/dev/null 2>&1 || true
  done
  local service_url; service_url=$(sed -E "s#^(postgres(ql)?://)[^@/]*@#\1login_etl_demo_vault_service@#" <<<"$DATABASE_URL")
  psql "$service_url" -qAtXc "SELECT 1" >/dev/null 2>&1 || service_url=$DATABASE_URL

  stop
  log "cargo lambda watch (runtime API and function URLs) on 127.0.0.1:$port"
  PATH="$PWD/.venv/bin:$PATH" nohup cargo lambda watch --only-lambda-apis \
    --invoke-address 127.0.0.1 --invoke-port "$port" >"$state/watch.log" 2>&1 &
  echo $! >"$state/watch.pid"
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
  done
  log "pii-vault-service-local (logs: $state/vault-service.log)"
  # `pii-vault quarantine replay` sends to the replay queue, `import-dlq` empties the DLQ.
  DATABASE_URL=$service_url PII_VAULT_LOCAL_IDENTITY="local:${USER:-developer}" \
    REPLAY_QUEUE_URL=${REPLAY_QUEUE_URL:-} DEAD_LETTER_QUEUE_URL=${DEAD_LETTER_QUEUE_URL:-} \
    QUARANTINE_RETENTION_DAYS=${QUARANTINE_RETENTION_DAYS:-} VAULT_RETENTION_DAYS=${VAULT_RETENTION_DAYS:-} \
    AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$port/.rt" AWS_LAMBDA_FUNCTION_NAME=pii-vault-service \
    AWS_LAMBDA_FUNCTION_VERSION='$LATEST' AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256 \
    nohup target/debug/pii-vault-service-local >"$state/vault-service.log" 2>&1 &
  echo $! >"$state/vault-service.pid"
  sleep 0.5
  if ! kill -0 "$(cat "$state/vault-service.pid")" 2>/dev/null; then
    log "pii-vault-service-local did not start:"; tail -5 "$state/vault-service.log" >&2; exit 1
  fi
  # With --only-lambda-apis, cargo-lambda serves the one function as `_`.
  sed -i '/^export PII_VAULT_URL=/d' "$state/env"
  echo "export PII_VAULT_URL='http://127.0.0.1:$port/lambda-url/_/'" >>"$state/env"
}

case "${1:-}" in
  up) up ;;
  down) stop; [ -f "$state/env" ] && sed -i '/^export PII_VAULT_URL=/d' "$state/env"; true ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
