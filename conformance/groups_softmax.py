"""The softmax-family and multi-head-attention groups of the catalog (``catalog.GROUPS``)."""

from __future__ import annotations

from .variants import HALF, Variants


def softmax(full: bool) -> Variants:
    yield {"shape": [4, 7]}, ("float64", "float32", "float16", "bfloat16")
    yield {"shape": [4, 7], "magnitude": 1e4}, ("float32",)
    yield {"shape": [3, 4, 7], "pattern": "neg_inf"}, ("float32",)


def softmax_where(full: bool) -> Variants:
    yield {"shape": [4, 7], "where": "plain"}, ("float32",)
    yield {"shape": [4, 7], "where": "poisoned"}, ("float32",)


def softmax_empty(full: bool) -> Variants:
    yield {"shape": [4, 7], "pattern": "empty_row"}, ("float32",)


def softmax_nonfinite(full: bool) -> Variants:
    yield {"shape": [4, 7], "pattern": "nan"}, ("float32",)
    yield {"shape": [4, 7], "pattern": "pos_inf"}, ("float32",)


def softmax_half(full: bool) -> Variants:
    yield {"shape": [4, 300], "magnitude": 3.0}, HALF


def mha(full: bool) -> Variants:
    base = {"batch": [2], "lq": 5, "lk": 7, "embed": 16, "hq": 4, "hkv": 4, "dk": 4}
    yield dict(base), ("float64", "float32", "float16")
    yield dict(base, cross=True, biases=True), ("float32",)
    yield dict(base, causal=True), ("float32",)
    yield dict(base, hkv=2, causal=True), ("float32",)
