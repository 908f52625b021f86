# login-etl. `make test` is what CI runs; see README.md.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
STACK := scripts/stack.sh
# cargo's line per crate (Compiling, Checking) becomes a line of progress every 10 s;
# warnings, errors and test output are shown as they come.
PROGRESS := scripts/progress.sh
CARGO_NOISE := '^ *(Compiling|Checking|Downloaded|Downloading|Finished|Updating|Locking|Adding|Executable) '
WITH_ENV := source .stack/env &&

.PHONY: deps check-layers init-keys stack bench bench-smoke test run up down migrate watch invoke fmt lint check-fmt check-compose unit build package deploy lint-template test-lint-template venv fuzz fuzz-build

## Everything CI checks: formatting, clippy, unit and integration tests on the local stack.
test: check-fmt lint check-layers stack check-compose test-lint-template
	$(WITH_ENV) $(PROGRESS) "cargo build (tests)" crates $(CARGO_NOISE) cargo test --workspace --lib --bins --tests --no-run
	$(WITH_ENV) cargo test --workspace --lib --bins --tests --no-fail-fast

## The whole job on the local stack: queue -> esm-local -> handler -> Postgres, DLQ.
run:
	@scripts/run.sh

## Start the local stack (PostgreSQL, moto for SQS+KMS, the vault service) and print its environment.
up:
	@$(STACK) up
	@scripts/local-service.sh up
	@echo "# to use it:  source .stack/env"; cat .stack/env

## The stack without the vault service (what the tests need: they start their own).
stack:
	@$(STACK) up

## Stop and remove what `make up` started.
down:
	@scripts/local-service.sh down
	@$(STACK) down

## Apply sql/ migrations to DATABASE_URL (the local stack's when it is up).
migrate:
	@if [ -z "$${DATABASE_URL:-}" ] && [ -f .stack/env ]; then source .stack/env; fi; \
	cargo run --quiet --bin migrate

## Create the keys through the local vault service (what `make run` does; needed once before `make watch`).
init-keys: up
	$(WITH_ENV) target/debug/pii-vault admin init-keys

## cargo lambda watch with the local stack's environment (then `make invoke`).
watch: up
	$(WITH_ENV) PATH="$$PWD/.venv/bin:$$PATH" cargo lambda watch --invoke-address 127.0.0.1

## cargo lambda invoke login-etl on EVENT (default: the exercise's 100 messages).
EVENT ?= events/login-queue-100.json
invoke:
	PATH="$$PWD/.venv/bin:$$PATH" cargo lambda invoke login-etl --invoke-address 127.0.0.1 --data-file $(EVENT)

## docker-compose.yml parses and mounts only files that exist (no Docker needed).
check-compose: stack
	.venv/bin/python scripts/check-compose.py

## The benchmark (release build, local stack): handler vs binary COPY, crypto, concurrency,
## cold start, KMS calls, peak RSS. Prints the tables BENCHMARKS.md is made of.
bench: stack
	$(WITH_ENV) cargo bench --bench pipeline

## The benchmark once on tiny inputs (what CI runs so it cannot rot; timings mean nothing).
bench-smoke: stack
	$(WITH_ENV) BENCH_SMOKE=1 cargo bench --bench pipeline

## Offline validation of template.yaml: SAM translation, cfn-lint, project invariants.
TEMPLATE ?= template.yaml
lint-template: venv
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} .venv/bin/python scripts/lint-template.py $(TEMPLATE)

## Proves lint-template rejects templates broken in events, redrive and key policy.
test-lint-template: venv
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} .venv/bin/python scripts/test-lint-template.py

venv:
	@$(STACK) venv

## Install the system packages the local stack needs (PostgreSQL, Python venv) if missing.
deps:
	@$(STACK) deps

# The deployable bootstrap for provided.al2023. ARCH=arm64|x86_64 (default: this machine's;
# cross-building needs the Rust target and zig). Without zig, cargo-lambda builds with cargo.
ARCH ?= $(if $(filter aarch64 arm64,$(shell uname -m)),arm64,x86_64)
LAMBDA_FLAGS = --release --bin login-etl $(if $(filter arm64,$(ARCH)),--arm64,--x86-64) \
	$(if $(shell command -v zig 2>/dev/null),,--compiler cargo)
## Build target/lambda/login-etl/bootstrap.
build: venv
	PATH="$$PWD/.venv/bin:$$PATH" cargo lambda build $(LAMBDA_FLAGS)
	@ls -l target/lambda/login-etl/bootstrap

## Build and zip it: target/lambda/login-etl/bootstrap.zip.
package: venv
	PATH="$$PWD/.venv/bin:$$PATH" cargo lambda build $(LAMBDA_FLAGS) --output-format zip
	@ls -l target/lambda/login-etl/bootstrap.zip

## sam deploy (guided the first time, then from samconfig.toml). Needs the SAM CLI and AWS credentials.
deploy: lint-template
	@command -v sam >/dev/null || { echo "install the SAM CLI first (pip install aws-sam-cli)"; exit 1; }
	sam build --beta-features
	if [ -f samconfig.toml ]; then sam deploy; else sam deploy --guided --parameter-overrides Architecture=$(ARCH); fi

## Module graphs without cycles, pure event/ and crypto/, and an ingest function that links
## nothing that reads the vault (its crate graph and its built binary); each check self-tested.
check-layers:
	python3 scripts/check-layers.py --self-test >/dev/null
	cargo build --quiet --bin login-etl
	python3 scripts/check-layers.py

check-fmt: deps
	cargo fmt --all -- --check

fmt:
	cargo fmt --all

lint: deps
	$(PROGRESS) "cargo clippy" crates $(CARGO_NOISE) cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test --lib

# Fuzzing (cargo-fuzz, libFuzzer; nightly): fuzz/ is its own workspace. See docs/fuzzing.md.
FUZZ_TARGETS := parse_body sqs_event
FUZZ_SECONDS ?= 60
# Extra libFuzzer flags, e.g. FUZZ_ARGS=-seed=1 (see docs/fuzzing.md).
FUZZ_ARGS ?=
FUZZ_TOOL := cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

## Build every fuzz target in fuzz/ (what CI runs, so the targets cannot rot).
fuzz-build:
	$(FUZZ_TOOL)
	cargo +nightly fuzz build

## Fuzz each target for FUZZ_SECONDS (default 60), replaying fuzz/regressions/ first. New
## inputs go to fuzz/target/corpus/ (fuzz/corpus/ is only read); crashes to fuzz/artifacts/.
fuzz:
	$(FUZZ_TOOL)
	for target in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/target/corpus/$$target; \
	  cargo +nightly fuzz run $$target fuzz/target/corpus/$$target fuzz/corpus/$$target \
	    $$(if [ -d fuzz/regressions/$$target ]; then echo fuzz/regressions/$$target; fi) -- \
	    -max_total_time=$(FUZZ_SECONDS) $(FUZZ_ARGS); \
	done
