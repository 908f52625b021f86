#!/usr/bin/env bash
# `make run`: the whole job on the local stack. Brings the stack up (Postgres, moto SQS
# and KMS, queues with redrive to the DLQ, KMS key alias), migrates, loads the exercise's
# 100 messages into login-queue (once per database: a second run adds no rows), drains
# the queue through esm-local and the login-etl function code, and shows the result: the
# rows, and the rejected message quarantined (sealed) at its first receive.
#
# Settings: RELOAD=1 loads the messages again (new SQS messages, so new rows);
# ESM_FLAGS adds esm-local flags; and those of scripts/stack.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/stack.sh up
source .stack/env
psql_q() { psql "$DATABASE_URL" -qAtX -v ON_ERROR_STOP=1 "$@"; }
# "1 message", "2 messages"
count_of() { if [ "$1" = 1 ]; then echo "1 $2"; else echo "$1 ${3:-${2}s}"; fi; }

echo "== building (cargo build: a few minutes the first time); migrating; starting the vault service"
# All the binaries at once, so that local-service.sh finds them built. cargo's line per
# crate is replaced by a line of progress every 10 s; warnings and errors are shown.
scripts/progress.sh "cargo build" crates '^ *(Compiling|Downloaded|Downloading|Finished|Updating|Locking|Adding) ' \
  cargo build --bin migrate --bin esm-local --bin pii-vault-service-local --bin pii-vault
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
  echo "== user_logins already holds $(count_of "$already" row): not loading the messages again (RELOAD=1 would)"
else
  echo "== loading the exercise's 100 messages into login-queue"
  .venv/bin/python scripts/local_aws.py load
fi

echo "== draining login-queue through esm-local (rejected messages are quarantined, sealed, at their first receive)"
# esm-local's log lines (JSON) are kept in .stack/esm-local.log; the rejections among them
# are shown below from the quarantine instead, every other line is shown as it comes.
esm_log=.stack/esm-local.log
# shellcheck disable=SC2086
DATABASE_URL=$function_url RUST_LOG=${RUST_LOG:-warn} target/debug/esm-local --queue-url "$QUEUE_URL" --until-empty ${ESM_FLAGS:-} |
  tee "$esm_log" | { grep -v '"message":"message rejected; quarantined"' || true; }

rows=$(psql_q -c "SELECT count(*) FROM user_logins")
echo
echo "== user_logins: $(count_of "$rows" row); the first five"
# The reveal hint below names the first of these rows.
order="ORDER BY sent_at, user_id"
psql "$DATABASE_URL" -X -P pager=off -c "SELECT user_id, device_type, left(masked_ip, 16) || '…' AS masked_ip,
    left(masked_device_id, 16) || '…' AS masked_device_id, locale, app_version, app_version_raw, create_date
  FROM user_logins $order LIMIT 5"

quarantined=$(psql_q -c "SELECT count(*) FROM login_data.login_quarantine")
dlq=$(.venv/bin/python scripts/local_aws.py depth | awk '$1=="login-queue-dlq"{print $2}')
echo "== login_quarantine holds $(count_of "$quarantined" row); the dead-letter queue $(count_of "$dlq" message)"
# Reason, field and dates only: the body is sealed. (Here read as the local superuser; in
# AWS only the vault service reads the quarantine: pii-vault quarantine list.)
if [ "$quarantined" -gt 0 ]; then
  psql "$DATABASE_URL" -X -P pager=off -c "SELECT message_id, attempt, source, reason_code, field,
      receive_count, quarantined_at, erased_at IS NOT NULL AS erased
    FROM login_data.login_quarantine ORDER BY quarantined_at, message_id LIMIT 10"
  echo "   A rejected message is quarantined in the same transaction as its batch's rows and"
  echo "   then deleted from the queue: no plaintext waits in SQS, and it costs one receive."
fi

user=$(psql_q -c "SELECT user_id FROM user_logins $order LIMIT 1")
echo
echo "Next steps"
echo "  Use the stack from a shell:  source .stack/env"
if [ -n "$user" ]; then
  echo "  Reveal the first row's PII through the vault service (audited before it is answered):"
  echo "    source .stack/env; target/debug/pii-vault reveal --user-id $user --reason 'demo: ticket 1'"
  echo "    target/debug/pii-vault audit"
  echo "    target/debug/pii-vault audit verify --log .stack/vault-service.log   # the hash chain, against the service's log"
fi
echo "  The audit, as the auditor sees it:  psql '$(as_login login_etl_demo_auditor)' -c 'SELECT * FROM pii_audit'"
echo "  Try the roles with psql:  psql '$(as_login login_etl_demo_analyst)' -c 'SELECT * FROM vault.pii_vault'"
echo "  Run it again (adds no rows): make run; load the messages again, as new ones: RELOAD=1 make run"
echo "  esm-local's log lines: $esm_log"
echo "  Stop everything:  make down"
