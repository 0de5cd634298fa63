"""attnspec: reference attention and softmax on the Python Array API standard.

One implementation, written only against the standard, runs unchanged on NumPy, CuPy,
PyTorch, JAX, array-api-strict and Dask. Its meaning is fixed by ``docs/spec.md``.
"""

from __future__ import annotations

from . import native
from .attention import native_plan, scaled_dot_product_attention
from .layout import (
    bhld_to_blhd,
    bhld_to_packed,
    blhd_to_bhld,
    merge_heads,
    packed_to_bhld,
    split_heads,
)
from .masks import (
    attention_mask,
    causal_mask,
    combine_masks,
    length_mask,
    mask_to_bias,
    window_mask,
)
from .merge import merge
from .mha import multi_head_attention
from .segments import cu_seqlens_from_segment_ids, segment_ids_from_cu_seqlens
from .softmax import log_softmax, logsumexp, softmax

__version__ = "0.1.0"

__all__ = [
    "attention_mask",
    "bhld_to_blhd",
    "bhld_to_packed",
    "blhd_to_bhld",
    "causal_mask",
    "combine_masks",
    "cu_seqlens_from_segment_ids",
    "length_mask",
    "log_softmax",
    "logsumexp",
    "mask_to_bias",
    "merge",
    "merge_heads",
    "multi_head_attention",
    "native",
    "native_plan",
    "packed_to_bhld",
    "scaled_dot_product_attention",
    "segment_ids_from_cu_seqlens",
    "softmax",
    "split_heads",
    "window_mask",
]
