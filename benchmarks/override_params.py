"""params.yaml as shipped plus named changes: the one way the benchmarks derive their params.

The device scripts and bench programs measure the defaults plus the changes they name, so they keep working
when params.yaml gains a key; a change to a section or key params.yaml lacks is an error, not a new key.
From the shell it writes the changed file, as `dvc exp run -S` would:

    python benchmarks/override_params.py OUT [section.key=value ...]   (values are read as YAML)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def apply(params: dict, changes: dict[str, dict]) -> dict:
    """Replace ``changes[section][key]`` in ``params`` (raw YAML values); unknown sections or keys stop."""
    for section, keys in changes.items():
        for key, value in keys.items():
            if section not in params or key not in params[section]:
                raise SystemExit(f"override_params: {section}.{key}: not a key of params.yaml")
            params[section][key] = value
    return params


def shipped(changes: dict[str, dict] | None = None, path: Path = ROOT / "params.yaml") -> dict:
    """params.yaml as shipped (raw YAML) with ``changes`` applied."""
    return apply(yaml.safe_load(path.read_text(encoding="utf-8")), changes or {})


def parsed(params: dict, *sections: str) -> dict:
    """The named sections (all by default) checked and parsed as the stages parse them."""
    from vigsm.config import SECTIONS, parse_section

    return {k: parse_section(k, params[k], SECTIONS[k]) for k in sections or SECTIONS}


def override(params: dict, assignments: list[str]) -> dict:
    """Apply `section.key=value` assignments (the value read as YAML; `key=` sets the empty string)."""
    for item in assignments:
        dotted, sep, value = item.partition("=")
        section, _, key = dotted.partition(".")
        if not sep or not key:
            raise SystemExit(f"override_params: {item!r}: expected section.key=value")
        apply(params, {section: {key: yaml.safe_load(value) if value else ""}})
    return params


def main() -> None:
    out, *assignments = sys.argv[1:]
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    text = yaml.safe_dump(override(params, assignments), allow_unicode=True, sort_keys=False)
    Path(out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
