"""What the accelerator offers: whether CUDA is there, and how much memory a run took at its peak."""

from __future__ import annotations


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def peak_gpu_memory_gb() -> float | None:
    """The most GPU memory torch has held for tensors in this process, in GB (1e9 bytes); None without CUDA."""
    if not cuda_available():
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 1e9
