#!/usr/bin/env python3
"""Structural check of docker-compose.yml (no Docker engine here): it parses, has the
postgres and localstack services with their ports, and every file it mounts exists."""
import os
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> int:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    problems = []
    services = compose.get("services", {})
    for name, port in (("postgres", "5432"), ("localstack", "4566")):
        service = services.get(name)
        if not service:
            problems.append(f"service {name} is missing")
            continue
        if not service.get("image"):
            problems.append(f"{name} has no image")
        if not any(str(p).endswith(f":{port}") for p in service.get("ports", [])):
            problems.append(f"{name} does not publish port {port}")
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                path = ROOT / source
                if not path.exists():
                    problems.append(f"{name} mounts {source}, which does not exist")
                elif path.suffix == ".sh" and not os.access(path, os.X_OK):
                    problems.append(f"{name} mounts {source}, which is not executable")
    if not any((ROOT / "sql").glob("V*__*.sql")):
        problems.append("sql/ has no migrations for the postgres init directory")
    for problem in problems:
        print(f"docker-compose.yml: {problem}", file=sys.stderr)
    print(f"docker-compose.yml: {len(services)} services checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
