"""vigsm: QLoRA fine-tuning and honest evaluation on Vietnamese grade-school math.

Importing this package is cheap: torch, transformers, peft, trl and unsloth are imported only inside
the functions that need them.
"""

__version__ = "0.1.0"
