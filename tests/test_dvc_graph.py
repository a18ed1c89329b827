"""dvc.yaml is exact: each stage depends on precisely the code its script imports inside vigsm, and on
the params keys it reads. The import closure is computed from the source, so a module split or a new
import that dvc.yaml does not follow fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SHIPPED_PARAMS, shipped_params

PACKAGE = "vigsm"


def _module_file(src: Path, module: str) -> Path | None:
    """The file that defines ``module`` (dotted, under ``src``), or None if it is not a module there."""
    base = src.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_trivial_init(path: Path) -> bool:
    """A package __init__ holding only a docstring and ``__version__``: importing it changes nothing a
    stage computes, so it is not a dependency."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]:
            continue
        return False
    return True


def _imported_modules(path: Path, module: str | None) -> set[str]:
    """Every module name ``path`` imports anywhere (top level, inside functions, under ``if``), with
    ``from X import y`` giving both X and X.y (y may be a submodule)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                assert module is not None, f"{path}: relative import outside a package"
                parts = module.split(".")
                anchor = parts[: len(parts) - node.level] if path.name != "__init__.py" else parts[
                    : len(parts) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_closure(script: Path, src: Path = ROOT / "src", package: str = PACKAGE) -> set[Path]:
    """The files of ``package`` (under ``src``) that running ``script`` can import, transitively."""
    seen: set[Path] = set()
    todo: list[tuple[Path, str | None]] = [(script, None)]
    while todo:
        path, module = todo.pop()
        for name in _imported_modules(path, module):
            if name != package and not name.startswith(package + "."):
                continue
            parts = name.split(".")
            # Importing a.b.c runs a/__init__, a/b/__init__ and then c.
            for i in range(1, len(parts) + 1):
                dotted = ".".join(parts[:i])
                file = _module_file(src, dotted)
                if file is None or file in seen:
                    continue
                seen.add(file)
                todo.append((file, dotted))
    return {f for f in seen if not (f.name == "__init__.py" and _is_trivial_init(f))}


def _dvc() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


STAGES = sorted(_dvc()["stages"])


@pytest.mark.parametrize("stage", STAGES)
def test_stage_code_deps_are_exactly_its_import_closure(stage):
    spec = _dvc()["stages"][stage]
    scripts = [d for d in spec["deps"] if d.startswith("stages/")]
    assert len(scripts) == 1 and scripts[0] in spec["cmd"], (stage, scripts)
    expected = {scripts[0], *(_rel(f) for f in import_closure(ROOT / scripts[0]))}
    declared = {d for d in spec["deps"] if d.startswith(("stages/", "src/"))}
    assert declared == expected, (f"{stage}: dvc.yaml misses {sorted(expected - declared)} and lists "
                                  f"{sorted(declared - expected)} that the stage never imports")


def test_import_closure_follows_lazy_transitive_and_package_imports(tmp_path):
    """The closure itself can fail: lazy imports in functions, `from pkg import mod`, relative imports
    and chains are followed; third-party and unrelated modules are not."""
    pkg = tmp_path / "src" / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""doc."""\n__version__ = "1"\n')
    (pkg / "a.py").write_text("import json\n\ndef f():\n    from pkg import b\n    return b\n")
    (pkg / "b.py").write_text("from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("X = 1\n")
    (pkg / "sub" / "c.py").write_text("if True:\n    import pkg.d as d\n")
    (pkg / "d.py").write_text("")
    (pkg / "unused.py").write_text("import pkg.a\n")
    script = tmp_path / "stage.py"
    script.write_text("import yaml\nfrom pkg.a import f\n")
    got = {p.relative_to(pkg).as_posix() for p in import_closure(script, tmp_path / "src", "pkg")}
    assert got == {"a.py", "b.py", "sub/__init__.py", "sub/c.py", "d.py"}


def _params_of(stage: str) -> list[str]:
    return [p if isinstance(p, str) else next(iter(p)) for p in _dvc()["stages"][stage].get("params", [])]


def test_declared_params_exist_and_generate_declares_the_model_keys_it_reads():
    from vigsm.generation import MODEL_KEYS

    doc = shipped_params()
    for stage in STAGES:
        for entry in _params_of(stage):
            if entry == "params.yaml":  # the check stage tracks the whole file (unknown sections are errors)
                continue
            section, _, key = entry.partition(".")
            assert section in doc and (not key or key in doc[section]), (stage, entry)
    for stage in ("generate-base", "generate", "generate-rl"):
        declared = _params_of(stage)
        assert "model" not in declared, f"{stage} must not depend on the whole model section"
        assert sorted(e.split(".", 1)[1] for e in declared if e.startswith("model.")) == sorted(MODEL_KEYS)
        assert "generate" in declared
    assert "model.max_seq_length" not in MODEL_KEYS and {"model", "lora", "train"} <= set(_params_of("train"))


def test_rl_stages_declare_the_params_they_read():
    """rl reads the loading keys (vigsm.rl.MODEL_KEYS), lora.gradient_checkpointing and rl, and no train
    key (an SFT param reaches it through models/adapter); generate-rl and score read rl.steps for the skip."""
    from vigsm.generation import MODEL_KEYS as GENERATE_MODEL_KEYS
    from vigsm.rl import MODEL_KEYS

    declared = _params_of("rl")
    assert sorted(MODEL_KEYS) == sorted(GENERATE_MODEL_KEYS)
    assert sorted(declared) == sorted([*(f"model.{k}" for k in MODEL_KEYS), "lora.gradient_checkpointing", "rl"])
    deps = _dvc()["stages"]["rl"]["deps"]
    assert "models/adapter" in deps and "data/prepared/train.jsonl" in deps
    assert "rl.steps" in _params_of("generate-rl") and "rl.steps" in _params_of("score")
    assert "models/adapter-rl" in _dvc()["stages"]["generate-rl"]["deps"]
    assert "data/predictions/rl.jsonl" in _dvc()["stages"]["score"]["deps"]


def test_generate_fingerprint_hashes_exactly_the_keys_generate_reads():
    """A partial predictions file survives a change to a key generate never reads, and no other."""
    import dataclasses

    from vigsm.config import load_section
    from vigsm.generation import MODEL_KEYS, fingerprint

    model_p, gen_p = load_section("model", path=SHIPPED_PARAMS), load_section("generate", path=SHIPPED_PARAMS)
    rows = [{"id": "q1", "prompt": [{"role": "user", "content": "1 + 1?"}]}]
    fp = fingerprint(model_p, gen_p, rows, None)
    assert fingerprint(dataclasses.replace(model_p, max_seq_length=model_p.max_seq_length + 1), gen_p, rows, None) == fp
    changed = {"name": "other/model", "revision": "v2", "gguf_file": "x.gguf", "load_in_4bit": not model_p.load_in_4bit,
               "dtype": "float32", "trust_remote_code": not model_p.trust_remote_code}
    assert set(changed) == set(MODEL_KEYS)
    for key, value in changed.items():
        assert fingerprint(dataclasses.replace(model_p, **{key: value}), gen_p, rows, None) != fp, key
    assert fingerprint(model_p, dataclasses.replace(gen_p, max_new_tokens=gen_p.max_new_tokens + 1), rows, None) != fp
