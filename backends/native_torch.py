"""``torch.nn.functional.scaled_dot_product_attention`` as an attnspec native kernel.

Accepted calls (everything else declines, with the reason, to the portable path):
no mask or bias (a boolean ``attn_mask`` lets a NaN key at a masked position reach every
row, ATT-LEAK-1), ``causal`` upper-left or lower-right with ``Lq <= Lk`` (torch's
``causal_lower_right``; ``Lq > Lk`` has empty rows, for which torch warns), ``kv_lengths``
only without ``causal`` (as a key-padding mask over zeroed padding rows), a Python scale.
For finite inputs those calls agree with the spec in every case of the conformance
catalog, including empty rows (0) and their gradients (0); ``attnspec check`` grades them
as ``attnspec.native.torch``. Non-finite inputs follow torch's own rules (see ``exact``), so
``implementation="auto"`` never takes this kernel.
"""

from __future__ import annotations

import numbers
from typing import Any

import array_api_compat

from attnspec._blocks import key_padding
from attnspec.native import NativeCall

__all__ = ["KERNEL", "TorchSdpaKernel"]


class TorchSdpaKernel:
    name = "torch.nn.functional.scaled_dot_product_attention"
    #: NaN/inf differ: a row whose only attended key is NaN gives 0, not NaN, and with a
    #: mask (3-d inputs, ``causal_lower_right``) a masked NaN key can reach other rows.
    #: So "native" only, with the spec's results for finite inputs.
    exact = False

    def handles(self, xp: Any) -> bool:
        return bool(array_api_compat.is_torch_namespace(xp))

    def decline(self, call: NativeCall) -> str | None:
        shape = call.shape
        if not isinstance(call.scale, numbers.Real):
            return "scale is an array (torch takes a Python float)"
        if call.causal and call.kv_lengths is not None:
            return ("causal with kv_lengths needs a boolean attn_mask, through which torch "
                    "lets masked NaN keys reach every row (ATT-LEAK-1)")
        if call.causal and call.alignment == "lower_right" and shape.lq > shape.lk:
            return "lower-right causal with Lq > Lk has empty rows (torch warns on them)"
        return None

    def __call__(self, call: NativeCall) -> Any:
        import torch

        shape = call.shape
        batch = shape.batch
        q, k, v = call.query, call.key, call.value
        # torch's kernels want one batch shape; broadcasting views cost nothing.
        k = k.expand(*batch, *k.shape[-3:])
        v = v.expand(*batch, *v.shape[-3:])
        q = q.expand(*batch, *q.shape[-3:])
        attn_mask, is_causal = None, False
        if call.kv_lengths is not None:
            # key_padding is (*batch, 1, Lk, 1), for K and V rows; the mask wants (..., 1, Lk).
            attn_mask = key_padding(shape.lk, call.kv_lengths, call.xp, call.device).mT
        elif call.causal and (call.alignment == "upper_left" or shape.lq == shape.lk):
            is_causal = True
        elif call.causal:
            from torch.nn.attention.bias import causal_lower_right

            attn_mask = causal_lower_right(shape.lq, shape.lk)
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=float(call.scale),
            enable_gqa=shape.hq != shape.hkv,
        )


KERNEL = TorchSdpaKernel()
