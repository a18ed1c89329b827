"""The attention kernels inference and training run on: the SDPA backend policy, and grouped-query
attention for one-token decoding steps."""

from __future__ import annotations

from typing import Any

from vigsm.device import cuda_available

DECODE_ATTENTION = "vigsm_sdpa"


def configure_attention() -> str:
    """Keep PyTorch's SDPA off cuDNN attention on CUDA; return the policy applied.

    On Hopper, torch's dispatcher sends masked and causal SDPA calls to cuDNN attention, which builds a
    new execution plan for every new sequence shape: every training step (lengths vary) and every
    decoding step (the key length grows by one) pays it. Flash and memory-efficient attention compute
    the same function without per-shape plans. (benchmarks/gpu_bench.py turns it back on afterwards to
    time torch's default.)
    """
    if not cuda_available():
        return "cpu"
    import torch

    torch.backends.cuda.enable_cudnn_sdp(False)
    return "flash/mem-efficient (cuDNN attention off)"


def gqa_decode_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                         dropout: float = 0.0, scaling: float | None = None, is_causal: bool | None = None,
                         **kwargs: Any) -> tuple[Any, None]:
    """transformers' SDPA attention, except that a one-token decoding step reads grouped K/V heads once.

    With a padding mask, transformers repeats each K/V head for every query head that shares it (x8 for
    Qwen2.5-3B) before calling SDPA, so every decoding step writes and reads the whole cache eight more
    times. For a single query position the repeat is not needed: the query heads that share a K/V head
    are laid along the query-length axis, [B, H, 1, D] -> [B, H_kv, H/H_kv, D], which is the same
    attention (the padding mask [B, 1, 1, L] broadcasts over them). Prefill and training calls go
    through transformers' own SDPA function unchanged.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None and attention_mask.shape[-1] < key.shape[-2]:
        # a preallocated cache (vigsm.decoding's static decoding): only the columns the mask covers are read
        key, value = key[:, :, : attention_mask.shape[-1]], value[:, :, : attention_mask.shape[-1]]
    groups = getattr(module, "num_key_value_groups", 1)
    if query.shape[2] != 1 or groups == 1 or dropout or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    import torch

    b, h, _, d = query.shape
    q = query.reshape(b, key.shape[1], groups, d)
    mask = attention_mask[:, :, :, : key.shape[-2]] if attention_mask is not None else None
    out = torch.nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(b, h, 1, d).transpose(1, 2).contiguous(), None


def use_decode_attention(model: Any) -> Any:
    """Switch ``model`` to :func:`gqa_decode_attention` (registered with transformers once)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if DECODE_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(DECODE_ATTENTION, gqa_decode_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(DECODE_ATTENTION, sdpa_mask)
    model.set_attn_implementation(DECODE_ATTENTION)
    return model
