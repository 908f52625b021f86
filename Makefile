# login-etl. `make test` is what CI runs; see README.md.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
STACK := scripts/stack.sh
WITH_ENV := source .stack/env &&

.PHONY: test up down migrate fmt lint check-fmt unit

## Everything CI checks: formatting, clippy, unit and integration tests on the local stack.
test: check-fmt lint up
	$(WITH_ENV) cargo test --all-targets --no-fail-fast

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

check-fmt:
	cargo fmt --all -- --check

fmt:
	cargo fmt --all

lint:
	cargo clippy --all-targets -- -D warnings

unit:
	cargo test --lib
