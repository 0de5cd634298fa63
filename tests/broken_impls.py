"""Deliberately broken attention implementations, for testing the conformance suite.

Each one is the spec's computation (a plain NumPy re-implementation of
``attnspec.scaled_dot_product_attention``, with its exact signature, layout ``(*batch, H, L,
D)`` and ``return_lse``/``return_weights``) with ONE defect injected. :data:`correct` is the
same code without a defect: it passes the whole catalog, so whatever a broken one fails is
its defect's doing.

:data:`BROKEN` maps each defect to its implementation (``tests/test_conformance_broken.py``
says which rule each one breaks); :func:`adapter` gives the conformance adapter that grades
one (``broken_impls:<name>`` through ``attnspec.conformance.adapters.resolve``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import attnspec
from attnspec.conformance.adapters import Adapter, resolve

__all__ = ["BROKEN", "DEFECTS", "adapter", "correct", "raises_on_softcap"]

#: defect -> what it does wrong
DEFECTS: dict[str, str] = {
    "wrong_scale": "default scale 1/Dk instead of 1/sqrt(Dk)",
    "flipped_mask": "bool mask True = masked",
    "upper_left_always": "ignores alignment='lower_right'",
    "no_max_subtraction": "softmax without subtracting the row max",
    "float16_accumulation": "half inputs: products, sums and matmuls carried in float16",
    "nan_for_empty_rows": "a row with nothing to attend gives NaN (out, lse and weights)",
    "interleaved_gqa": "query head h reads KV head h % Hkv",
    "softcap_after_mask": "softcap applied after bias and masking (masked scores become -c)",
    "window_off_by_one": "the window's left side keeps one key too many",
    "kv_lengths_ignored": "kv_lengths has no effect",
}


#: What the conformance adapter for these functions declares: every feature (the default),
#: and all three outputs.
_CAPABILITIES: dict[str, Any] = {"returns": ["out", "lse", "weights"]}


def _check(query: np.ndarray, key: np.ndarray, value: np.ndarray) -> None:
    """The spec's argument errors (ATT-ARG-1, ATT-DTYPE-1), from shapes and dtypes only."""
    for name, x in (("key", key), ("value", value)):
        if x.dtype != query.dtype:
            raise TypeError(f"{name}: dtype {x.dtype}, expected query's dtype {query.dtype}")
    if not np.issubdtype(query.dtype, np.floating):
        raise TypeError(f"query: dtype {query.dtype}, expected a real floating dtype")
    if key.shape[-1] != query.shape[-1]:
        raise ValueError(f"key: head dim {key.shape[-1]}, expected {query.shape[-1]}")
    if value.shape[-3:-1] != key.shape[-3:-1]:
        raise ValueError(f"value: shape {value.shape} does not match key shape {key.shape}")
    if query.shape[-3] % key.shape[-3]:
        raise ValueError(f"key: {key.shape[-3]} heads do not divide {query.shape[-3]}")


def _half_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` with every product rounded to float16 and summed one term at a time in
    float16 (NumPy's own float16 matmul and sum accumulate in float32)."""
    terms = (a[..., :, :, None] * b[..., None, :, :]).astype(np.float16)  # (..., M, K, N)
    return np.add.accumulate(terms, axis=-2, dtype=np.float16)[..., -1, :]


def _half_sum(x: np.ndarray) -> np.ndarray:
    return np.add.accumulate(x.astype(np.float16), axis=-1, dtype=np.float16)[..., -1:]


def _attention(query: Any, key: Any, value: Any, defect: str | None, **o: Any) -> Any:
    query, key, value = (np.asarray(x) for x in (query, key, value))
    _check(query, key, value)
    dtype = query.dtype
    hq, lq, dk = query.shape[-3:]
    hkv, lk = key.shape[-3:-1]
    low = defect == "float16_accumulation" and dtype == np.float16
    acc = np.float16 if low else np.float64 if dtype == np.float64 else np.float32

    mask, window, alignment = o["mask"], o["window"], o["alignment"]
    kv_lengths = o["kv_lengths"]
    if defect == "flipped_mask" and mask is not None:
        mask = ~np.asarray(mask)
    if defect == "upper_left_always":
        alignment = "upper_left"
    if defect == "window_off_by_one" and window is not None and window[0] is not None:
        window = (window[0] + 1, window[1])
    if defect == "kv_lengths_ignored":
        kv_lengths = None
    keep = attnspec.attention_mask(
        lq, lk, mask=mask, causal=o["causal"], window=window, alignment=alignment,
        kv_lengths=kv_lengths, q_lengths=o["q_lengths"], xp=np,
    )

    q, k, v = (x.astype(acc) for x in (query, key, value))
    if kv_lengths is not None:
        # Padding rows are zeroed so that NaN/inf there cannot reach P @ V (ATT-LEAK-2).
        real = (np.arange(lk) < np.asarray(kv_lengths)[..., None])[..., None, :, None]
        k, v = np.where(real, k, 0).astype(acc), np.where(real, v, 0).astype(acc)
    heads = np.arange(hq) % hkv if defect == "interleaved_gqa" else np.arange(hq) // (hq // hkv)
    k, v = np.take(k, heads, axis=-3), np.take(v, heads, axis=-3)

    scale = o["scale"]
    if scale is None:
        scale = 1.0 / dk if defect == "wrong_scale" else 1.0 / math.sqrt(dk)
    kt = np.swapaxes(k, -1, -2)
    s = (_half_matmul(q, kt) if low else np.matmul(q, kt)) * acc(scale)
    c = o["softcap"]
    if c is not None and defect != "softcap_after_mask":
        s = c * np.tanh(s / c)
    if o["bias"] is not None:
        b = np.asarray(o["bias"]).astype(acc)
        s = np.where(b == -math.inf, -math.inf, s + b)
    if keep is not None:
        s = np.where(keep, s, -math.inf)
    if c is not None and defect == "softcap_after_mask":
        s = c * np.tanh(s / c)
    s = s.astype(acc)

    if lk:
        row_max = np.max(s, axis=-1, keepdims=True)
    else:
        row_max = np.full((*s.shape[:-1], 1), -math.inf, dtype=acc)
    shift = np.where(row_max == -math.inf, 0, row_max).astype(acc)
    if defect == "no_max_subtraction":
        shift = np.zeros_like(shift)
    e = np.exp(s - shift).astype(acc)
    total = _half_sum(e) if low else np.sum(e, axis=-1, keepdims=True)
    safe = np.where(total == 0, 1, total).astype(acc)
    lse = np.where(total == 0, -math.inf, shift + np.log(safe))
    lse = np.where(row_max == math.inf, math.inf, lse)

    p = e
    if o["dropout_mask"] is not None:
        p = np.where(o["dropout_mask"], p, 0).astype(acc)
        if o["dropout_p"] > 0:
            p = (p * (1.0 / (1.0 - o["dropout_p"]))).astype(acc)
    out = (_half_matmul(p, v) if low else np.matmul(p, v)) / safe
    weights = p / safe
    if defect == "nan_for_empty_rows":
        empty = total == 0
        out, weights, lse = (np.where(empty, math.nan, x) for x in (out, weights, lse))

    results = [out.astype(dtype)]
    if o["return_lse"]:
        results.append(lse[..., 0].astype(np.float64 if dtype == np.float64 else np.float32))
    if o["return_weights"]:
        results.append(weights.astype(dtype))
    return results[0] if len(results) == 1 else tuple(results)


def _implementation(defect: str | None) -> Any:
    """attnspec's signature around :func:`_attention` with ``defect`` injected."""

    def sdpa(
        query: Any,
        key: Any,
        value: Any,
        /,
        *,
        mask: Any = None,
        bias: Any = None,
        causal: bool = False,
        window: Any = None,
        alignment: str = "upper_left",
        scale: float | None = None,
        softcap: float | None = None,
        kv_lengths: Any = None,
        q_lengths: Any = None,
        dropout_mask: Any = None,
        dropout_p: float = 0.0,
        return_lse: bool = False,
        return_weights: bool = False,
        chunk_size: Any = None,  # accepted for signature parity; these always go direct
        implementation: str = "portable",  # likewise: there is only one implementation here
        xp: Any = None,
    ) -> Any:
        with np.errstate(all="ignore"):
            return _attention(
                query, key, value, defect, mask=mask, bias=bias, causal=causal, window=window,
                alignment=alignment, scale=scale, softcap=softcap, kv_lengths=kv_lengths,
                q_lengths=q_lengths, dropout_mask=dropout_mask, dropout_p=dropout_p,
                return_lse=return_lse, return_weights=return_weights,
            )

    # Named like the module attribute, so that pickle and "module:callable" find it.
    sdpa.__name__ = sdpa.__qualname__ = defect or "correct"
    sdpa.attnspec_capabilities = dict(_CAPABILITIES)  # type: ignore[attr-defined]
    sdpa.__doc__ = f"attnspec's attention with one defect: {DEFECTS[defect]}." if defect else (
        "attnspec's attention re-implemented in NumPy, without a defect.")
    return sdpa


correct = _implementation(None)
wrong_scale = _implementation("wrong_scale")
flipped_mask = _implementation("flipped_mask")
upper_left_always = _implementation("upper_left_always")
no_max_subtraction = _implementation("no_max_subtraction")
float16_accumulation = _implementation("float16_accumulation")
nan_for_empty_rows = _implementation("nan_for_empty_rows")
interleaved_gqa = _implementation("interleaved_gqa")
softcap_after_mask = _implementation("softcap_after_mask")
window_off_by_one = _implementation("window_off_by_one")
kv_lengths_ignored = _implementation("kv_lengths_ignored")

#: defect -> implementation
BROKEN: dict[str, Any] = {
    "wrong_scale": wrong_scale,
    "flipped_mask": flipped_mask,
    "upper_left_always": upper_left_always,
    "no_max_subtraction": no_max_subtraction,
    "float16_accumulation": float16_accumulation,
    "nan_for_empty_rows": nan_for_empty_rows,
    "interleaved_gqa": interleaved_gqa,
    "softcap_after_mask": softcap_after_mask,
    "window_off_by_one": window_off_by_one,
    "kv_lengths_ignored": kv_lengths_ignored,
}


def raises_on_softcap(query: Any, key: Any, value: Any, /, *, softcap: Any = None,
                      **options: Any) -> Any:
    """:data:`correct`, except that it raises ``NotImplementedError`` for ``softcap``."""
    if softcap is not None:
        raise NotImplementedError("softcap")
    return correct(query, key, value, **options)


raises_on_softcap.attnspec_capabilities = dict(_CAPABILITIES)  # type: ignore[attr-defined]


def adapter(name: str, **capabilities: Any) -> Adapter:
    """The conformance adapter of ``broken_impls:<name>`` on NumPy (every feature declared
    unless ``capabilities`` says otherwise; out, lse and weights returned)."""
    return resolve(f"{__name__}:{name}", capabilities={**_CAPABILITIES, **capabilities})
