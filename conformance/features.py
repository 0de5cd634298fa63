"""Features: what a case needs from an implementation, and what an adapter declares.

A case outside an adapter's declared features is "not applicable", never a failure. Features
are deliberately fine-grained so that a framework's documented profile (JAX's mean-of-V
fully masked rows, torch's NaN from masked NaN keys) is a missing feature, reported in the
fingerprint, and not a failed rule.
"""

from __future__ import annotations

FEATURES: dict[str, str] = {
    # inputs and shapes
    "batch0": "no batch dimension: (H, L, D)",
    "batch2": "two batch dimensions: (B1, B2, H, L, D)",
    "gqa": "grouped-query heads (Hq a multiple > 1 of Hkv)",
    "dv_ne_dk": "value head dim differs from query/key head dim",
    "lq_ne_lk": "query and key lengths differ",
    "empty_keys": "Lk = 0",
    # options
    "scale": "an explicit score scale",
    "softcap": "logit soft-capping",
    "mask": "a boolean mask (True = may attend)",
    "bias": "an additive float bias",
    "bias_neg_inf": "-inf entries in the bias mask their positions",
    "causal": "causal masking, upper-left alignment",
    "causal_lower_right": "causal masking, lower-right alignment",
    "window": "a sliding window",
    "kv_lengths": "per-sequence key lengths",
    "q_lengths": "per-sequence query lengths",
    "dropout": "a caller-supplied dropout keep-mask",
    # outputs
    "lse": "returns the log-sum-exp",
    "weights": "returns the attention weights",
    # behaviours where frameworks differ (profiles)
    "empty_rows": "rows with nothing to attend give 0 (lse -inf)",
    "poison_scores": "NaN/inf at masked scores or bias do not leak",
    "poison_kv": "NaN/inf in K/V rows past kv_lengths do not leak",
    "nonfinite": "NaN/+inf at attended positions propagate as specified",
    "extreme": "logits of magnitude up to 1e4 and near the dtype's max",
    "arg_errors": "invalid arguments raise TypeError/ValueError",
    # operations other than attention
    "where": "softmax with a where= argument",
    # gradients and repeatability (opt-in: see OPT_IN)
    "backward": "gradients dq, dk, dv of out for an output cotangent",
    "grad_bias": "also the gradient of out w.r.t. the bias (with backward)",
    "deterministic": "bit-identical outputs and gradients when a call is repeated",
}

#: Features an implementation must declare explicitly: a declaration of "every feature" (a
#: user's callable without a ``features`` list) does not include them, because they claim
#: more than the forward computation (a backward pass, repeatability).
OPT_IN = frozenset({"backward", "grad_bias", "deterministic"})

#: Features that describe a behaviour rather than an input: the fingerprint observes them
#: on every implementation, declared or not.
BEHAVIOURS = frozenset({"empty_rows", "poison_scores", "poison_kv", "nonfinite", "extreme",
                        "arg_errors"})
