"""A saved PEFT adapter reloaded in the precision it was trained in: the reference that the GPU test tier
(tests/test_gpu.py) and benchmarks/reload_precision.py compare the generate stage's reload against.

Neither the pipeline nor its tools load a model this way: the generate stage's bfloat16 norms are cheaper
and flip only near-tied tokens. tests/ import it through pytest's ``pythonpath`` (pyproject.toml); the
benchmarks put tests/support on their path.
"""

from __future__ import annotations

from typing import Any

from vigsm.config import ModelParams
from vigsm.modeling import attach_adapter, load_model, prepare_kbit_base
from vigsm.weights import resolve_model


def load_as_trained(p: ModelParams, adapter_dir: str) -> Any:
    """The base in the precision the PEFT backend trained it in (:func:`vigsm.modeling.prepare_kbit_base`)
    with the saved adapter, for inference: its greedy texts are the live trained model's."""
    model = prepare_kbit_base(load_model(p, resolve_model(p)), p, gradient_checkpointing=False)
    return attach_adapter(model, adapter_dir, p).eval()
