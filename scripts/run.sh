#!/usr/bin/env bash
# `make run`: the whole job on the local stack. Brings the stack up (Postgres, moto SQS
# and KMS, queues with redrive to the DLQ, KMS key alias), migrates, loads the exercise's
# 100 messages into login-queue (once per database: a second run adds no rows), drains
# the queue through esm-local and the login-etl handler, and shows the result.
#
# Settings: RELOAD=1 loads the messages again (new SQS messages, so new rows);
# ESM_FLAGS adds esm-local flags; and those of scripts/stack.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/stack.sh up
source .stack/env
psql_q() { psql "$DATABASE_URL" -qAtX -v ON_ERROR_STOP=1 "$@"; }

echo "== building"
cargo build --quiet --bin migrate --bin esm-local --bin pii-vault
target/debug/migrate

# Demo logins in the roles (no password: the throwaway cluster trusts loopback).
# The drain runs as the writer when that login can connect, as the function would.
as_login() { sed -E "s#^(postgres(ql)?://)[^@/]*@#\1$1@#" <<<"$DATABASE_URL"; }
for login in writer analyst auditor vault_service; do
  psql_q -c "DO \$\$ BEGIN CREATE ROLE login_etl_demo_$login LOGIN IN ROLE login_etl_$login;
             EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" 2>/dev/null || true
done
writer_url=$(as_login login_etl_demo_writer)
if [[ "$writer_url" != "$DATABASE_URL" ]] && psql "$writer_url" -qAtXc "SELECT 1" >/dev/null 2>&1; then
  function_url=$writer_url
  echo "== the function runs as login_etl_demo_writer (role login_etl_writer)"
else
  function_url=$DATABASE_URL
fi

# The keys are created by the vault service's admin operation, never by the function.
service_url=$(as_login login_etl_demo_vault_service)
psql "$service_url" -qAtXc "SELECT 1" >/dev/null 2>&1 || service_url=$DATABASE_URL
echo "== pii-vault admin init-keys"
VAULT_DATABASE_URL=$service_url target/debug/pii-vault admin init-keys

already=$(psql_q -c "SELECT count(*) FROM user_logins")
if [ "$already" -gt 0 ] && [ -z "${RELOAD:-}" ]; then
  echo "== user_logins already holds $already rows: not loading the messages again (RELOAD=1 would)"
else
  echo "== loading the exercise's 100 messages into login-queue"
  .venv/bin/python scripts/local_aws.py load
fi

echo "== draining login-queue through esm-local (failures go to the DLQ after ${MAX_RECEIVE_COUNT:-3} receives)"
# shellcheck disable=SC2086
DATABASE_URL=$function_url RUST_LOG=${RUST_LOG:-warn} target/debug/esm-local --queue-url "$QUEUE_URL" --until-empty ${ESM_FLAGS:-}

echo
echo "== user_logins: $(psql_q -c "SELECT count(*) FROM user_logins") rows; a few of them"
psql "$DATABASE_URL" -X -P pager=off -c "SELECT user_id, device_type, left(masked_ip, 16) || '…' AS masked_ip,
    left(masked_device_id, 16) || '…' AS masked_device_id, locale, app_version, app_version_raw, create_date
  FROM user_logins ORDER BY sent_at LIMIT 5"
echo "== the dead-letter queue (login-queue-dlq) holds $(.venv/bin/python scripts/local_aws.py depth | awk '$1=="login-queue-dlq"{print $2}') messages"
echo
echo "Use the stack from a shell:  source .stack/env"
user=$(psql_q -c "SELECT user_id FROM user_logins ORDER BY sent_at, user_id LIMIT 1")
echo "Reveal one row's PII (audited first; the service's code runs in the tool for now):"
echo "  source .stack/env; VAULT_DATABASE_URL='$service_url' \\"
echo "    target/debug/pii-vault reveal --user-id $user --reason 'demo: ticket 1'"
echo "The audit, as the auditor sees it:  psql '$(as_login login_etl_demo_auditor)' -c 'SELECT * FROM pii_audit'"
echo "Try the roles with psql:  psql '$(as_login login_etl_demo_analyst)' -c 'SELECT * FROM pii_vault'"
echo "Stop everything:  make down"
