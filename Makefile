# login-etl. `make test` is what CI runs; see README.md.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
STACK := scripts/stack.sh
# cargo's line per crate (Compiling, Checking) becomes a line of progress every 10 s;
# warnings, errors and test output are shown as they come.
PROGRESS := scripts/progress.sh
CARGO_NOISE := '^ *(Compiling|Checking|Downloaded|Downloading|Finished|Updating|Locking|Adding|Executable) '
WITH_ENV := source .stack/env &&

.PHONY: deps check-layers init-keys stack bench bench-smoke test run up down migrate watch invoke fmt lint check-fmt check-compose unit build package rust-target sam sam-build deploy lint-template test-lint-template test-check-bootstrap venv fuzz fuzz-build

## Everything CI checks: formatting, clippy, unit and integration tests on the local stack.
test: check-fmt lint check-layers stack check-compose test-lint-template test-check-bootstrap
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
## The bootstrap check refuses what it must (a local-only identity, a wrong architecture, a new glibc).
test-check-bootstrap:
	python3 scripts/check-bootstrap.py --self-test

test-lint-template: venv
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} .venv/bin/python scripts/test-lint-template.py

venv:
	@$(STACK) venv

## Install the system packages the local stack needs (PostgreSQL, Python venv) if missing.
deps:
	@$(STACK) deps

# The deployable bootstraps for provided.al2023, one per function of template.yaml.
# ARCH=arm64|x86_64, default this machine's. The host's architecture builds with cargo's own
# compiler (no zig); a cross build (ARCH=arm64 on x86_64, or the reverse) with zig, which
# cargo-lambda's PyPI package brings into .venv (ziglang), for the Rust target rustup adds.
FUNCTIONS := login-etl pii-vault-service quarantine-purge partition-maintenance vault-expiry
HOST_ARCH := $(if $(filter aarch64 arm64,$(shell uname -m)),arm64,x86_64)
ARCH ?= $(HOST_ARCH)
RUST_TARGET = $(if $(filter arm64,$(ARCH)),aarch64,x86_64)-unknown-linux-gnu
LAMBDA_COMPILER ?= $(if $(filter $(HOST_ARCH),$(ARCH)),cargo,cargo-zigbuild)
# cargo-lambda (and zig, found as `python3 -m ziglang`) from .venv; the compiler also for sam.
LAMBDA_ENV = PATH="$$PWD/.venv/bin:$$PATH" CARGO_LAMBDA_COMPILER=$(LAMBDA_COMPILER)
LAMBDA_FLAGS = --release $(addprefix --bin ,$(FUNCTIONS)) $(if $(filter arm64,$(ARCH)),--arm64,--x86-64) \
	--compiler $(LAMBDA_COMPILER)
LAMBDA_OUT = $${CARGO_TARGET_DIR:-target}/lambda
CHECK_BOOTSTRAP = python3 scripts/check-bootstrap.py $(ARCH)
SAM = SAM_CLI_TELEMETRY=0 .venv-sam/bin/sam

## Build target/lambda/{login-etl,pii-vault-service,quarantine-purge,partition-maintenance,vault-expiry}/bootstrap for ARCH.
build: venv rust-target
	$(LAMBDA_ENV) cargo lambda build $(LAMBDA_FLAGS)
	$(CHECK_BOOTSTRAP) $(foreach f,$(FUNCTIONS),$(LAMBDA_OUT)/$(f)/bootstrap)

## Build and zip them: target/lambda/{login-etl,pii-vault-service,quarantine-purge,partition-maintenance,vault-expiry}/bootstrap.zip.
package: venv rust-target
	$(LAMBDA_ENV) cargo lambda build $(LAMBDA_FLAGS) --output-format zip
	$(CHECK_BOOTSTRAP) $(foreach f,$(FUNCTIONS),$(LAMBDA_OUT)/$(f)/bootstrap.zip)

# The Rust standard library for ARCH (already there for the host's own).
rust-target:
	@rustup target list --installed | grep -qx $(RUST_TARGET) || rustup target add $(RUST_TARGET)

## The SAM CLI in .venv-sam (its own venv: its pins would change the test venv's boto3).
sam: venv
	@$(STACK) sam-venv

## `sam build` of template.yaml for ARCH, offline (no AWS credentials; what CI runs so the
## deploy path cannot rot): .aws-sam/build/{LoginEtlFunction,VaultServiceFunction,QuarantinePurgeFunction,VaultExpiryFunction}/bootstrap.
sam-build: sam rust-target
	$(LAMBDA_ENV) $(SAM) build --beta-features --parameter-overrides Architecture=$(ARCH)
	$(CHECK_BOOTSTRAP) $(foreach f,LoginEtlFunction VaultServiceFunction QuarantinePurgeFunction VaultExpiryFunction,.aws-sam/build/$(f)/bootstrap)

# The Architecture a samconfig.toml deploys with, if any: the build must match it.
SAMCONFIG_ARCH = $(shell grep -oE 'Architecture=\\?"?(arm64|x86_64)' samconfig.toml 2>/dev/null | grep -oE 'arm64|x86_64' | head -1)
## sam build for ARCH, then sam deploy (guided the first time, then from samconfig.toml).
## Needs AWS credentials.
deploy: lint-template
	@if [ -n "$(SAMCONFIG_ARCH)" ] && [ "$(SAMCONFIG_ARCH)" != "$(ARCH)" ]; then \
	  echo "samconfig.toml deploys Architecture=$(SAMCONFIG_ARCH): make deploy ARCH=$(SAMCONFIG_ARCH)"; exit 1; fi
	$(MAKE) sam-build ARCH=$(ARCH)
	if [ -f samconfig.toml ]; then $(SAM) deploy; else $(SAM) deploy --guided --parameter-overrides Architecture=$(ARCH); fi

## Module graphs without cycles, pure event/ and crypto/, and an ingest function that links
## nothing that reads the vault (its crate graph and its built binary); each check self-tested.
check-layers:
	python3 scripts/check-layers.py --self-test >/dev/null
	$(PROGRESS) "cargo build (login-etl)" crates $(CARGO_NOISE) cargo build --bin login-etl
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
