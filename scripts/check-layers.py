#!/usr/bin/env python3
"""The architecture's rules, checked on the source, the crate graph and the built binary.

1. Modules: in each crate, the module graph (from `use crate::…` and `crate::…` paths
   outside test code) has no cycle, and the pure layers of the core (event, crypto,
   error) import no I/O crate.
2. Crates: the ingest function (`login-etl`) depends, through normal and build
   dependencies, on no crate that reads the vault or serves staff: the vault service, its
   protocol, the CLI, the local tools, the migrations.
3. The artifact: the built `login-etl` binary holds no SQL that reads `pii_vault`, and no
   mention of `pii_audit` at all (the function only inserts into the vault).
4. No session state (docs/operations.md, "Connection poolers"): the crates that reach
   Postgres through the pool (the core, the function, the vault service, the housekeeping
   jobs) call none of tokio-postgres's named-statement API (a `&str` given to `query` or
   `execute` is prepared as a named statement on the session) but the login `COPY`'s
   `prepare`, begin transactions only where their `SET LOCAL` bounds are sent, and send no
   session `SET`, advisory lock, `LISTEN` or temporary table.

  check-layers.py [--binary PATH]   check, print the module graphs, exit 1 on a violation
  check-layers.py --self-test       show that each check fails on a broken input
"""
import json
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
# Each crate's source root, by package name.
CRATES = {
    "login-etl-core": REPO / "crates/core/src",
    "login-etl": REPO / "src",
    "pii-vault-service": REPO / "crates/vault-service/src",
    "pii-vault-protocol": REPO / "crates/vault-protocol/src",
    "pii-vault": REPO / "crates/pii-vault/src",
    "login-etl-local-tools": REPO / "crates/local-tools/src",
    "login-etl-housekeeping": REPO / "crates/housekeeping/src",
}
# Pure layers of the core and the crates each may use.
PURE = {
    # zeroize: the PII a rejected body holds is wiped when read (no I/O either way).
    "event": {"std", "core", "serde", "serde_json", "thiserror", "unicode_properties", "zeroize"},
    "crypto": {"std", "core", "hmac", "sha2", "aes_gcm_siv", "rand", "zeroize", "hex", "serde", "thiserror"},
    "error": {"std", "core", "tokio_postgres", "deadpool_postgres", "thiserror"},
}
# What the ingest function must not depend on.
FORBIDDEN_FOR_INGEST = {"pii-vault-service", "pii-vault-protocol", "pii-vault", "login-etl-local-tools",
                        "login-etl-housekeeping",
                        "login-etl-migrations", "clap", "reqwest", "anyhow"}
# SQL that reads the vault, or any mention of the audit, in the ingest binary.
FORBIDDEN_IN_BINARY = [
    re.compile(rb"(?i)\b(from|join|update)\s+(\w+\.)?pii_vault\b"),  # with its schema or not
    re.compile(rb"(?i)\bpii_audit(_\w+)?\b"),  # the view, its entries, its chain head
]
# Rule 4: what keeps state on a session, and where a listed exception lives.
STATELESS_CRATES = ("login-etl-core", "login-etl", "pii-vault-service", "login-etl-housekeeping")
SESSION_STATE = [
    (re.compile(r"\.(query|query_one|query_opt|query_raw|execute|execute_raw|prepare|prepare_typed"
                r"|prepare_cached|bind|bind_raw)\s*\("), "a named statement"),
    (re.compile(r"\.(transaction|build_transaction)\s*\("), "a transaction without its bounds (store::begin)"),
    (re.compile(r"(?i)pg_advisory"), "an advisory lock"),
    (re.compile(r"(?i)\bLISTEN\s"), "LISTEN"),
    (re.compile(r"(?i)\bTEMP(ORARY)?\s+TABLE"), "a temporary table"),
    (re.compile(r"(?i)[\";]\s*SET\s+(?!LOCAL\b)"), "a session SET"),
]
# (file, what): the transactions that send their own `SET LOCAL` first (the batch's,
# pipelined; store::begin itself; the partition DDL's, with their own lock bound).
STATELESS_EXCEPTIONS = {
    ("crates/core/src/store/batch.rs", "a transaction without its bounds (store::begin)"),
    ("crates/core/src/store/mod.rs", "a transaction without its bounds (store::begin)"),
    ("crates/core/src/store/partitions.rs", "a transaction without its bounds (store::begin)"),
    ("crates/core/src/store/partitions/retention.rs", "a transaction without its bounds (store::begin)"),
}
# `crate::App` is `app::App`.
REEXPORTS = {"App": "app"}
# Lower-case path roots that are not crates (modules of a layer, std's prelude modules).
LOCAL_PATHS = ("blind_index", "seal", "login", "reject", "app_version", "text", "body", "fmt", "mem")


def known_crates(src: pathlib.Path) -> set[str]:
    """Every dependency name of the crate's Cargo.toml, as Rust spells it."""
    manifest = (src.parent / "Cargo.toml").read_text()
    section = manifest.split("[dependencies]", 1)[1].split("\n[", 1)[0]
    deps = re.findall(r"^([A-Za-z0-9_-]+)\s*=", section, re.M)
    return {d.replace("-", "_") for d in deps}


def strip_tests(text: str) -> str:
    """Drops `#[cfg(test)] mod … { … }` blocks (brace-matched) and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for match in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if match.start() < i:
            continue
        out.append(text[i:match.start()])
        depth, j = 1, match.end()
        while depth and j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def module_edges(root: pathlib.Path, files: dict[pathlib.Path, str], pure: dict, crates: set[str]):
    """The module graph of one crate's `files` (path -> text) and the pure-layer problems."""
    edges: dict[str, set[str]] = {}
    problems = []
    for path, text in sorted(files.items()):
        rel = path.relative_to(root)
        if rel.parts[0] in ("main.rs", "lib.rs", "bin"):
            continue
        module = rel.parts[0].removesuffix(".rs")
        text = strip_tests(text)
        names = set(re.findall(r"\bcrate::(\w+)", text))
        for group in re.findall(r"use\s+crate::\{([^;]*)\}", text):  # use crate::{a, b::c}
            names |= set(re.findall(r"(?:^|[\s,{])(\w+)", group))
        names = {REEXPORTS.get(n, n) for n in names}
        modules = {p.relative_to(root).parts[0].removesuffix(".rs") for p in files}
        targets = {n for n in names if n != module and n in modules}
        edges.setdefault(module, set()).update(targets)
        if module in pure:
            roots = set(re.findall(r"\buse\s+(\w+)::", text)) | set(re.findall(r"(?<![\w:])([a-z_]\w*)::", text))
            roots -= {"crate", "super", "self"} | set(LOCAL_PATHS)
            for crate in sorted(r for r in roots if r not in pure[module] and r in crates):
                problems.append(f"{rel}: pure layer `{module}` uses the crate `{crate}`")
            for target in sorted(targets - set(pure)):
                problems.append(f"{rel}: pure layer `{module}` depends on `{target}`")
    return edges, problems


def session_state(files: dict[str, str]) -> list[str]:
    """Rule 4 over `files` (path relative to the repository -> text), tests left out."""
    problems = []
    for rel, text in sorted(files.items()):
        text = strip_tests(text)
        for pattern, what in SESSION_STATE:
            if (rel, what) in STATELESS_EXCEPTIONS:
                continue
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                problems.append(f"{rel}:{line}: {what} (`{match.group(0).strip()}`): session state")
    return problems


def cycles(edges: dict[str, set[str]]) -> list[str]:
    """Every cycle a depth-first search meets."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append("cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def ingest_dependencies(metadata: dict) -> set[str]:
    """Every package `login-etl` links: its normal and build dependencies, transitively."""
    nodes = {node["id"]: node for node in metadata["resolve"]["nodes"]}
    names = {package["id"]: package["name"] for package in metadata["packages"]}
    start = next(i for i, name in names.items() if name == "login-etl")
    seen, todo = set(), [start]
    while todo:
        for dep in nodes[todo.pop()]["deps"]:
            if any(kind["kind"] in (None, "build") for kind in dep["dep_kinds"]) and dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                todo.append(dep["pkg"])
    return {names[i] for i in seen}


# What the binary must hold (the writer's own insert): proves the scan sees its SQL at all.
REQUIRED_IN_BINARY = re.compile(rb"(?i)insert\s+into\s+(\w+\.)?pii_vault\b")


def binary_problems(data: bytes) -> list[str]:
    problems = []
    if not REQUIRED_IN_BINARY.search(data):
        problems.append("the login-etl binary holds no `INSERT INTO pii_vault`: is it the function?")
    for pattern in FORBIDDEN_IN_BINARY:
        for match in pattern.finditer(data):
            problems.append(f"the login-etl binary holds `{match.group(0).decode(errors='replace')}`")
    return problems


def check(binary: pathlib.Path) -> int:
    problems = []
    for name, root in CRATES.items():
        if not root.is_dir():
            continue
        files = {path: path.read_text() for path in root.rglob("*.rs")}
        pure = PURE if name == "login-etl-core" else {}
        edges, found = module_edges(root, files, pure, known_crates(root))
        problems += [f"{name}: {p}" for p in found + cycles(edges)]
        if name in STATELESS_CRATES:
            problems += session_state({str(p.relative_to(REPO)): t for p, t in files.items()})
        print(f"{name}:")
        for module in sorted(edges):
            print(f"  {module:14} -> {', '.join(sorted(edges[module])) or '-'}")

    metadata = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1"], cwd=REPO, check=True,
        capture_output=True).stdout)
    linked = ingest_dependencies(metadata)
    problems += [f"login-etl depends on `{bad}`" for bad in sorted(linked & FORBIDDEN_FOR_INGEST)]
    print(f"login-etl links {len(linked)} crates, none of: {', '.join(sorted(FORBIDDEN_FOR_INGEST))}")

    if not binary.exists():
        problems.append(f"{binary} is not built (cargo build --bin login-etl)")
    else:
        problems += binary_problems(binary.read_bytes())
        print(f"{binary.relative_to(REPO) if binary.is_relative_to(REPO) else binary}: "
              "no SQL that reads pii_vault, no pii_audit")
    for problem in problems:
        print("check-layers:", problem, file=sys.stderr)
    return 1 if problems else 0


def self_test() -> int:
    """Each check, fed a broken input, must report it; fed a sound one, must not."""
    root = pathlib.Path("/x/src")
    cycle = {root / "a.rs": "use crate::b::B;", root / "b.rs": "use crate::a::A;"}
    impure = {root / "event/mod.rs": "use tokio_postgres::Client;"}
    sound = {root / "a.rs": "use crate::b::B;", root / "b.rs": "pub struct B;"}
    metadata = lambda dep: {  # noqa: E731
        "packages": [{"id": "i", "name": "login-etl"}, {"id": "c", "name": "login-etl-core"},
                     {"id": "v", "name": dep}],
        "resolve": {"nodes": [
            {"id": "i", "deps": [{"pkg": "c", "dep_kinds": [{"kind": None}]}]},
            {"id": "c", "deps": [{"pkg": "v", "dep_kinds": [{"kind": None}]}]},
            {"id": "v", "deps": []}]}}
    dev_only = metadata("pii-vault-service")
    dev_only["resolve"]["nodes"][1]["deps"][0]["dep_kinds"] = [{"kind": "dev"}]
    cases = [
        ("a module cycle", bool(cycles(module_edges(root, cycle, {}, set())[0])), True),
        ("an I/O crate in event/", bool(module_edges(root, impure, PURE, {"tokio_postgres"})[1]), True),
        ("a sound graph", bool(cycles(module_edges(root, sound, {}, set())[0])), False),
        ("the service linked through core",
         "pii-vault-service" in ingest_dependencies(metadata("pii-vault-service")), True),
        ("the service as a dev-dependency only", "pii-vault-service" in ingest_dependencies(dev_only), False),
        ("a vault read in the binary",
         bool(binary_problems(b"INSERT INTO pii_vault (f)\0SELECT nonce FROM pii_vault WHERE\0")), True),
        ("a vault read by its schema-qualified name",
         bool(binary_problems(b"INSERT INTO vault.pii_vault (f)\0SELECT nonce FROM vault.pii_vault WHERE\0")), True),
        ("the audit log's schema in the binary",
         bool(binary_problems(b"INSERT INTO vault.pii_vault (f)\0INSERT INTO pii_audit_log.pii_audit_entries\0")), True),
        ("the writer's qualified insert alone", bool(binary_problems(b"\0INSERT INTO vault.pii_vault (field)\0")), False),
        ("the audit in the binary", bool(binary_problems(b"INSERT INTO pii_vault (f)\0INSERT INTO pii_audit\0")), True),
        ("the audit's entries in the binary",
         bool(binary_problems(b"INSERT INTO pii_vault (f)\0INSERT INTO pii_audit_entries\0")), True),
        ("the writer's insert alone", bool(binary_problems(b"\0INSERT INTO pii_vault (field)\0")), False),
        ("a binary without the writer's SQL", bool(binary_problems(b"\0hello\0")), True),
        ("a query by a &str", bool(session_state({"a.rs": 'c.query("SELECT 1", &[]).await'})), True),
        ("an execute by a &str", bool(session_state({"a.rs": "tx.execute(SQL, &[&a]).await"})), True),
        ("a transaction without its bounds", bool(session_state({"a.rs": "client.transaction().await"})), True),
        ("a session SET", bool(session_state({"a.rs": 'c.batch_execute("SET lock_timeout = 0")'})), True),
        ("an advisory lock", bool(session_state({"a.rs": '"SELECT pg_advisory_lock(1)"'})), True),
        ("a temporary table", bool(session_state({"a.rs": '"CREATE TEMP TABLE t (a int)"'})), True),
        ("the unnamed statement, SET LOCAL and UPDATE … SET",
         bool(session_state({"a.rs": 'tx.query_typed("UPDATE t\n SET a = 1", &[]); "SET LOCAL lock_timeout = 1"'})),
         False),
        ("a named statement in the batch (its COPY is gone)",
         bool(session_state({"crates/core/src/store/batch.rs": "tx.prepare(&COPY)"})), True),
    ]
    failed = [name for name, got, want in cases if got != want]
    for name, got, want in cases:
        print(f"{'ok  ' if got == want else 'FAIL'} {name}: {'reported' if got else 'not reported'}")
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    binary = REPO / "target/debug/login-etl"
    if sys.argv[1:2] == ["--binary"] and len(sys.argv) == 3:
        binary = pathlib.Path(sys.argv[2]).resolve()
    sys.exit(check(binary))
