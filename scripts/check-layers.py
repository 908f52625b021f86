#!/usr/bin/env python3
"""The module graph of src/ (from `use crate::…` and `crate::…` paths outside test code)
must have no cycle, and the pure layers must import no I/O crate.

  check-layers.py            check, print the graph, exit 1 on a violation
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "src"
# Top-level modules of the library; a file belongs to the first path component.
PURE = {
    "event": {"std", "core", "serde", "serde_json", "thiserror", "unicode_properties"},
    "crypto": {"std", "core", "hmac", "sha2", "aes_gcm_siv", "rand", "zeroize", "hex", "serde", "thiserror"},
    "error": {"std", "core", "tokio_postgres", "deadpool_postgres", "thiserror"},
}


# `crate::App` is `app::App`.
REEXPORTS = {"App": "app"}
# Lower-case path roots that are not crates (modules of a layer, std's prelude modules).
LOCAL_PATHS = ("blind_index", "seal", "login", "reject", "app_version", "text", "body", "fmt", "mem")


def known_crates() -> set[str]:
    """Every dependency name of Cargo.toml, as Rust spells it."""
    manifest = (ROOT.parent / "Cargo.toml").read_text()
    deps = re.findall(r"^([A-Za-z0-9_-]+)\s*=", manifest.split("[dependencies]", 1)[1].split("\n[", 1)[0], re.M)
    return {d.replace("-", "_") for d in deps} | {"tokio_postgres"}


KNOWN_CRATES = known_crates()


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


def module_of(path: pathlib.Path) -> str | None:
    rel = path.relative_to(ROOT)
    if rel.parts[0] in ("main.rs", "lib.rs", "bin"):
        return None
    return rel.parts[0].removesuffix(".rs")


def main() -> int:
    edges: dict[str, set[str]] = {}
    problems = []
    for path in sorted(ROOT.rglob("*.rs")):
        module = module_of(path)
        if module is None:
            continue
        text = strip_tests(path.read_text())
        names = set(re.findall(r"\bcrate::(\w+)", text))
        for group in re.findall(r"use\s+crate::\{([^;]*)\}", text):  # use crate::{a, b::c}
            names |= set(re.findall(r"(?:^|[\s,{])(\w+)", group))
        names = {REEXPORTS.get(n, n) for n in names}
        targets = {n for n in names if n != module and ((ROOT / f"{n}.rs").exists() or (ROOT / n).is_dir())}
        edges.setdefault(module, set()).update(targets)
        if module in PURE:
            roots = set(re.findall(r"\buse\s+(\w+)::", text)) | set(re.findall(r"(?<![\w:])([a-z_]\w*)::", text))
            roots -= {"crate", "super", "self"} | set(LOCAL_PATHS)
            for crate in sorted(r for r in roots if r not in PURE[module] and r in KNOWN_CRATES):
                problems.append(f"{path.relative_to(ROOT.parent)}: pure layer `{module}` uses the crate `{crate}`")
            for target in sorted(targets - set(PURE)):
                problems.append(f"{path.relative_to(ROOT.parent)}: pure layer `{module}` depends on `{target}`")

    # Cycles, by depth-first search.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                problems.append("cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)

    for module in sorted(edges):
        print(f"{module:10} -> {', '.join(sorted(edges[module])) or '-'}")
    for problem in problems:
        print("check-layers:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
