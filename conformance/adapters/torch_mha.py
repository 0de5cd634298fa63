"""``torch.mha``: :class:`torch.nn.MultiheadAttention` for the ``mha`` op.

The case's projection weights are loaded into a fresh module (``batch_first=True``,
``dropout=0``, eval mode). attnspec's weights act as ``x @ w + b``; torch's ``nn.Linear``
weights as ``x @ W.T + b``, so each one is transposed -- the inverse of
:func:`attnspec.backends.torch.mha_weights_from_torch`, which the adapter uses to check the
loaded module reads back as the case's weights.

Declared: ``causal`` (given as a bool ``attn_mask``, where torch's ``True`` means *may not*
attend -- the opposite of the spec). Not declared:

* ``gqa``: the module has one head count for queries, keys and values;
* ``batch0``/``batch2`` are not needed: inputs with no or several batch dims are flattened
  to torch's single batch dim and back (a layout detail, not a feature of the module).

Cases whose projected width ``Hq * Dk`` differs from the embedding width are not
applicable: torch's head width is always ``embed_dim // num_heads``.
"""

from __future__ import annotations

import math
from typing import Any

from ..cases import Case
from ._native import NativeAdapter

__all__ = ["TorchMhaAdapter"]


class TorchMhaAdapter(NativeAdapter):
    name = "torch.mha"
    description = "torch.nn.MultiheadAttention (batch_first=True, eval mode)"
    backends = ("torch-cpu", "torch-cuda")
    distributions = ("torch",)
    ops = frozenset({"mha"})
    features = frozenset({"causal"})

    def not_applicable(self, case: Case) -> str | None:
        reason = super().not_applicable(case)
        if reason is None and case.op == "mha":
            p = case.params
            if p["hq"] * p["dk"] != p["embed"]:
                return (f"torch's head width is embed_dim // num_heads; the case projects "
                        f"to {p['hq']} x {p['dk']} != embed {p['embed']}")
        return reason

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        import torch

        x_q, x_k, x_v = args["query"], args["key"], args["value"]
        num_heads = args["num_heads"]
        if args.get("num_kv_heads", num_heads) != num_heads:
            raise ValueError("torch.nn.MultiheadAttention has no grouped-query heads")
        module = self._module(args, x_q.dtype, x_q.device)
        batch = x_q.shape[:-2]
        n = math.prod(batch)

        def flat(x: Any) -> Any:
            return x.reshape(n, *x.shape[-2:])

        attn_mask = None
        if args.get("causal"):
            lq, lk = x_q.shape[-2], x_k.shape[-2]
            # torch: True = may NOT attend.
            attn_mask = torch.ones(lq, lk, dtype=torch.bool, device=x_q.device).triu(1)
        with torch.no_grad():
            out, _ = module(flat(x_q), flat(x_k), flat(x_v), attn_mask=attn_mask,
                            need_weights=False)
        return {"out": out.reshape(*batch, *out.shape[-2:])}

    @staticmethod
    def _module(args: dict[str, Any], dtype: Any, device: Any) -> Any:
        import torch

        # backends/ is installed as attnspec.backends (setuptools package-dir), which mypy,
        # reading the source tree, may not see.
        from attnspec.backends.torch import (  # type: ignore[import-not-found, unused-ignore]
            mha_weights_from_torch,
        )

        w_q, w_k, w_v, w_o = args["w_q"], args["w_k"], args["w_v"], args["w_o"]
        embed, kdim, vdim = w_q.shape[0], w_k.shape[0], w_v.shape[0]
        biases = [args.get(n) for n in ("b_q", "b_k", "b_v", "b_o")]
        has_bias = any(b is not None for b in biases)
        module = torch.nn.MultiheadAttention(
            embed, args["num_heads"], dropout=0.0, bias=has_bias, kdim=kdim, vdim=vdim,
            batch_first=True, device=device, dtype=dtype,
        )
        module.eval()
        with torch.no_grad():
            if module.in_proj_weight is not None:
                module.in_proj_weight.copy_(torch.cat([w_q.T, w_k.T, w_v.T]))
            else:
                module.q_proj_weight.copy_(w_q.T)
                module.k_proj_weight.copy_(w_k.T)
                module.v_proj_weight.copy_(w_v.T)
            module.out_proj.weight.copy_(w_o.T)
            if has_bias:
                b_q, b_k, b_v, b_o = (
                    torch.zeros(w.shape[1], dtype=dtype, device=device) if b is None else b
                    for b, w in zip(biases, (w_q, w_k, w_v, w_o), strict=True)
                )
                module.in_proj_bias.copy_(torch.cat([b_q, b_k, b_v]))
                module.out_proj.bias.copy_(b_o)
        # Read the module back through attnspec's own converter: the loaded weights must act
        # exactly as the case's (a transposition slip would otherwise grade torch).
        loaded = mha_weights_from_torch(module)
        for name, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v), ("w_o", w_o)):
            if not torch.equal(loaded[name], w):
                raise AssertionError(f"torch.mha adapter: {name} did not load as given")
        return module
