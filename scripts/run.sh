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

echo "== building; migrating; starting the vault service (scripts/local-service.sh)"
cargo build --quiet --bin migrate --bin esm-local
scripts/local-service.sh up
source .stack/env

# The drain runs as the writer when that login can connect, as the function would.
as_login() { sed -E "s#^(postgres(ql)?://)[^@/]*@#\1$1@#" <<<"$DATABASE_URL"; }
writer_url=$(as_login login_etl_demo_writer)
if [[ "$writer_url" != "$DATABASE_URL" ]] && psql "$writer_url" -qAtXc "SELECT 1" >/dev/null 2>&1; then
  function_url=$writer_url
  echo "== the function runs as login_etl_demo_writer (role login_etl_writer)"
else
  function_url=$DATABASE_URL
fi

# The keys are created by the vault service's admin operation, never by the function.
echo "== pii-vault admin init-keys (through the vault service at $PII_VAULT_URL)"
target/debug/pii-vault admin init-keys

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
echo "Reveal one row's PII through the vault service (audited before it is answered):"
echo "  source .stack/env; target/debug/pii-vault reveal --user-id $user --reason 'demo: ticket 1'"
echo "  target/debug/pii-vault audit"
echo "The audit, as the auditor sees it:  psql '$(as_login login_etl_demo_auditor)' -c 'SELECT * FROM pii_audit'"
echo "Try the roles with psql:  psql '$(as_login login_etl_demo_analyst)' -c 'SELECT * FROM pii_vault'"
echo "Stop everything:  make down"
