#!/usr/bin/env python3
"""Checks that Lambda bootstraps run on provided.al2023 and hold nothing local-only, and
prints their sizes.

    scripts/check-bootstrap.py ARCH PATH...
    scripts/check-bootstrap.py --self-test [LOCAL_BINARY]

ARCH is arm64 or x86_64 (the template's Architecture). Each PATH is a bootstrap or a
zip holding one (what `make package` makes). Fails when a bootstrap is not an ELF
executable for ARCH, or needs a glibc newer than provided.al2023's 2.34: cargo's own
compiler links against the build machine's glibc, and a machine newer than AL2023
could make a bootstrap that only fails once deployed (zig builds for an older glibc:
make build LAMBDA_COMPILER=cargo-zigbuild). Fails too when a bootstrap holds the local
stack's identity (`PII_VAULT_LOCAL_IDENTITY`, which only `pii-vault-service-local` reads):
a deployed function must have no way to name its caller other than IAM, whatever cargo's
feature unification or a stray dependency brought in, so the artifact itself is read.

--self-test shows the checks fail on what they must refuse (made-up bytes, and
LOCAL_BINARY if given: a built `pii-vault-service-local`, which holds the identity).
"""

import os
import re
import sys
import zipfile

AL2023_GLIBC = (2, 34)
# What only the local stack's binary may contain.
LOCAL_ONLY = (b"PII_VAULT_LOCAL_IDENTITY",)
MACHINES = {"x86_64": 62, "arm64": 183}  # ELF e_machine


def bootstrap_bytes(path):
    if path.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            return archive.read("bootstrap")
    with open(path, "rb") as f:
        return f.read()


def check(arch, path, data):
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return "not a 64-bit ELF file"
    byteorder = "little" if data[5] == 1 else "big"
    machine = int.from_bytes(data[18:20], byteorder)
    if machine != MACHINES[arch]:
        found = {v: k for k, v in MACHINES.items()}.get(machine, f"e_machine {machine}")
        return f"built for {found}, not {arch}"
    # Symbol version names (GLIBC_2.x) are plain strings in .dynstr.
    versions = {tuple(map(int, m.groups())) for m in re.finditer(rb"GLIBC_(\d+)\.(\d+)", data)}
    newest = max(versions, default=None)
    if newest and newest > AL2023_GLIBC:
        return "needs glibc %d.%d; provided.al2023 has %d.%d" % (newest + AL2023_GLIBC)
    return local_only(data)


def local_only(data):
    found = [marker.decode() for marker in LOCAL_ONLY if marker in data]
    return f"holds {', '.join(found)}: a local-only path is in a deployable build" if found else None


def self_test(local_binary):
    elf = {"x86_64": b"\x7fELF\x02\x01" + bytes(12) + (62).to_bytes(2, "little")}
    clean = elf["x86_64"] + b"\0GLIBC_2.28\0"
    assert check("x86_64", "clean", clean) is None, "a clean bootstrap passes"
    assert "local-only" in check("x86_64", "local", clean + b"\0PII_VAULT_LOCAL_IDENTITY\0")
    assert "glibc 2.39" in check("x86_64", "new", elf["x86_64"] + b"GLIBC_2.39")
    assert "arm64" in check("arm64", "wrong", clean)
    if local_binary:
        assert local_only(bootstrap_bytes(local_binary)), f"{local_binary} holds no local identity"
    print("check-bootstrap self-test: ok" + (f" ({local_binary} is refused)" if local_binary else ""))


def main():
    if sys.argv[1:2] == ["--self-test"]:
        return self_test(sys.argv[2] if len(sys.argv) > 2 else None)
    if len(sys.argv) < 3 or sys.argv[1] not in MACHINES:
        sys.exit(__doc__.strip().splitlines()[2])
    arch, failed = sys.argv[1], False
    for path in sys.argv[2:]:
        data = bootstrap_bytes(path)
        error = check(arch, path, data)
        size = len(data) / 1e6
        if path.endswith(".zip"):
            note = f"bootstrap {size:.1f} MB, zip {os.path.getsize(path) / 1e6:.1f} MB"
        else:
            note = f"{size:.1f} MB"
        print(f"{path}: {arch}, {note}" + (f": {error}" if error else ""))
        failed |= error is not None
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
