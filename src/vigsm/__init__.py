"""vigsm: QLoRA fine-tuning and honest evaluation on Vietnamese grade-school math.

Importing this package is cheap: torch, transformers, peft, trl and unsloth are imported only inside
the functions that need them.
"""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes (>= 0.49), on a CPU with AVX512-BF16, warns at import that the optional `kernels` package is
# missing for its CPU 4-bit matmul. vigsm never runs 4-bit on a CPU (check_device refuses it), so the line is
# noise in every stage's log, and it would be a second line before a stage's one-line error. Its logger is
# set to errors only before anything can import bitsandbytes.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
