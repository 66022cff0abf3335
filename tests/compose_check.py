"""Validate a compose file against the vendored Compose schema subset (no network).

``python tests/compose_check.py compose.yaml`` (./scripts/test runs it) exits 1 and says
where a key is unknown or a value has the wrong type. YAML anchors and merge keys (``<<``)
are resolved by PyYAML first, as Compose does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from jsonschema import Draft7Validator

SCHEMA = Path(__file__).with_name("compose_schema.json")


def problems(path: str | Path) -> list[str]:
    """Every schema violation of the compose file at ``path`` (empty: valid)."""
    document = yaml.safe_load(Path(path).read_text("utf-8"))
    validator = Draft7Validator(json.loads(SCHEMA.read_text("utf-8")))
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    ]


def main(argv: list[str]) -> int:
    found = problems(argv[1] if len(argv) > 1 else "compose.yaml")
    for line in found:
        print(f"compose: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
