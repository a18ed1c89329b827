"""Write params.yaml with `section.key=value` overrides to another file, as `dvc exp run -S` would.

The device scripts derive every params file from the shipped params.yaml this way, so that they measure
the defaults plus the named changes, and keep working when params.yaml gains a key.

    python benchmarks/override_params.py OUT [section.key=value ...]   (values are read as YAML)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def override(params: dict, assignments: list[str]) -> dict:
    """Apply `section.key=value` assignments; an unknown section or key is an error, not a new key."""
    for item in assignments:
        dotted, sep, value = item.partition("=")
        section, _, key = dotted.partition(".")
        if not sep or section not in params or key not in params[section]:
            raise SystemExit(f"override_params: {item!r}: expected section.key=value for an existing key")
        params[section][key] = yaml.safe_load(value) if value else ""  # key= sets the empty string
    return params


def main() -> None:
    out, *assignments = sys.argv[1:]
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    text = yaml.safe_dump(override(params, assignments), allow_unicode=True, sort_keys=False)
    Path(out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
