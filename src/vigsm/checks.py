"""Cheap checks of params.yaml and the inputs, run by the first stage before DVC deletes any output.

DVC removes a stage's outputs just before it runs the stage's command, so a stage that rejects a bad
param or input has already lost the previous results. The ``check`` stage runs first: it validates every
params section (with :mod:`vigsm.config`, the same strict loader the stages use) and the inputs that can
be checked in seconds without torch (local data files, a local model directory, a hub id's form), and
raises the same one-line :class:`VigsmError` the later stage would raise, while nothing is deleted yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vigsm.config import SECTIONS, DataParams, GenerateParams, ModelParams, TrainParams, load_section, read_params
from vigsm.errors import VigsmError

# The check stage's output. Its bytes never depend on the params or the inputs, so a rerun of the
# check (any params change) leaves it identical and reruns nothing downstream by itself.
PASSED = "params.yaml and the inputs passed stages/check.py\n"

def check_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Validate every section of ``path`` and reject unknown sections; return the parsed sections."""
    unknown = sorted(set(read_params(path)) - set(SECTIONS))
    if unknown:
        raise VigsmError(f"params: {unknown[0]}: unknown section; allowed sections: {', '.join(SECTIONS)}")
    return {name: load_section(name, path=path) for name in SECTIONS}


def check_data(p: DataParams, sample_dir: Path, system_prompt_file: Path) -> None:
    """The system prompt file is readable and not empty. Local sources and the sample: run prepare's
    whole loading and cleaning in memory (nothing is written); a hub dataset: its id's form, and that it
    is cached or the hub is reachable."""
    from vigsm import data

    system_prompt = data.read_system_prompt(system_prompt_file)
    if p.source == "sample" or data.looks_local(p.source):
        data.prepare(p, sample_dir, system_prompt)
    else:
        from vigsm.hub import require_repo

        require_repo("data.source", p.source, "dataset", p.revision, need_owner=False)


def check_model(p: ModelParams) -> None:
    """What loading the model checks first (:func:`vigsm.weights.resolve_model`, the same code), in its dry
    run: no torch, no GGUF conversion, no download."""
    from vigsm.weights import resolve_model

    resolve_model(p, dry_run=True)


def check_gpus(train_p: TrainParams, gen_p: GenerateParams) -> None:
    """``train.gpus`` and ``generate.gpus`` fit this machine's devices, and the training rows per optimiser
    step divide among the train processes: what train and generate would reject only after DVC removed
    their outputs. torch is imported only when a ``gpus`` key is not 1."""
    from vigsm.distributed import resolve_gpus, split_batch

    resolve_gpus(gen_p.gpus, "generate.gpus")
    world = resolve_gpus(train_p.gpus, "train.gpus")
    if world > 1:
        split_batch(train_p.per_device_train_batch_size, train_p.gradient_accumulation_steps, world)


def check_all(params_path: str | Path, sample_dir: Path, system_prompt_file: Path) -> None:
    """Every check above, params first; raises the first problem as a one-line VigsmError."""
    sections = check_params(params_path)
    check_data(sections["data"], sample_dir, system_prompt_file)
    check_model(sections["model"])
    check_gpus(sections["train"], sections["generate"])
