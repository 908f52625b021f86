# login-etl. `make test` is what CI runs; see README.md.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
STACK := scripts/stack.sh
WITH_ENV := source .stack/env &&

.PHONY: test run up down migrate watch invoke fmt lint check-fmt check-compose unit

## Everything CI checks: formatting, clippy, unit and integration tests on the local stack.
test: check-fmt lint up check-compose
	$(WITH_ENV) cargo test --all-targets --no-fail-fast

## The whole job on the local stack: queue -> esm-local -> handler -> Postgres, DLQ.
run:
	@scripts/run.sh

## Start the local stack (PostgreSQL, moto for SQS+KMS) and print its environment.
up:
	@$(STACK) up
	@echo "# to use it:  source .stack/env"; cat .stack/env

## Stop and remove what `make up` started.
down:
	@$(STACK) down

## Apply sql/ migrations to DATABASE_URL (the local stack's when it is up).
migrate:
	@if [ -z "$${DATABASE_URL:-}" ] && [ -f .stack/env ]; then source .stack/env; fi; \
	cargo run --quiet --bin migrate

## cargo lambda watch with the local stack's environment (then `make invoke`).
watch: up
	$(WITH_ENV) PATH="$$PWD/.venv/bin:$$PATH" cargo lambda watch --invoke-address 127.0.0.1

## cargo lambda invoke login-etl on EVENT (default: the exercise's 100 messages).
EVENT ?= events/login-queue-100.json
invoke:
	PATH="$$PWD/.venv/bin:$$PATH" cargo lambda invoke login-etl --invoke-address 127.0.0.1 --data-file $(EVENT)

## docker-compose.yml parses and mounts only files that exist (no Docker needed).
check-compose: up
	.venv/bin/python scripts/check-compose.py

check-fmt:
	cargo fmt --all -- --check

fmt:
	cargo fmt --all

lint:
	cargo clippy --all-targets -- -D warnings

unit:
	cargo test --lib
