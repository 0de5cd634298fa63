"""Features: what a case needs from an implementation, and what an adapter declares.

Three kinds, treated differently:

* **Capabilities** (inputs, shapes, options, outputs, operations): what an implementation
  accepts. A case needing a capability the adapter does not declare is "not applicable",
  never a failure, and the option is never passed to it.
* **Behaviours** (:data:`BEHAVIOURS`): what the spec requires of whatever an implementation
  accepts (empty rows give 0, masked NaN does not leak, extreme logits do not overflow, bad
  arguments raise TypeError/ValueError). They cannot be declared away: a case that needs one
  is graded whenever its capabilities are declared. An implementation that knowingly does
  otherwise declares a *deviation* (``adapters/deviations.py``): the case is then an expected
  failure, shown as such, never hidden as "not applicable".
* **Opt-in claims** (:data:`OPT_IN`): a backward pass, repeatability. Declared explicitly.
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
    "sinks": "attention sinks: one extra logit per (batch, head) row in the denominator",
    "alibi": "ALiBi: -slope * |q_pos - kv_pos| added to the scores, one slope per head",
    "positions": "q_positions / kv_positions: causal, window and ALiBi in position space",
    "segments": "q_segment_ids / kv_segment_ids: packed sequences (varlen), -1 = padding",
    "paged": "block_table over key/value page pools (num_pages, Hkv, page_size, D)",
    "score_mod": "FlexAttention's score_mod(score, b, h, q_idx, kv_idx), after softcap",
    "mask_mod": "FlexAttention's mask_mod(b, h, q_idx, kv_idx) -> bool",
    # outputs
    "lse": "returns the log-sum-exp",
    "weights": "returns the attention weights",
    # behaviours the spec requires (never declared away; see the module docstring)
    "empty_rows": "rows with nothing to attend give 0 (lse -inf)",
    "poison_scores": "NaN/inf at masked scores or bias do not leak",
    "poison_kv": "NaN/inf in K/V rows past kv_lengths or of padding tokens do not leak",
    "nonfinite": "NaN/+inf at attended positions propagate as specified",
    "extreme": "logits of magnitude up to 1e4 and near the dtype's max",
    "arg_errors": "invalid arguments raise TypeError/ValueError",
    # operations other than attention
    "where": "softmax with a where= argument",
    # gradients and repeatability (opt-in: see OPT_IN)
    "backward": "gradients dq, dk, dv of out for an output cotangent",
    "grad_bias": "also the gradient of out w.r.t. the bias (with backward)",
    "grad_sinks": "also the gradient of out w.r.t. the sinks (with backward)",
    "grad_alibi": "also the gradient of out w.r.t. the ALiBi slopes (with backward)",
    "deterministic": "bit-identical outputs and gradients when a call is repeated",
    "batch_invariant": "a row's outputs bit-identical whatever else is in the batch or pack",
}

#: Features an implementation must declare explicitly: a declaration of "every feature" (a
#: user's callable without a ``features`` list) does not include them, because they claim
#: more than the forward computation (a backward pass, repeatability).
OPT_IN = frozenset({"backward", "grad_bias", "grad_sinks", "grad_alibi", "deterministic",
                    "batch_invariant"})

#: Behaviours the spec requires of every implementation for the inputs it accepts: a case
#: needing one is applicable whatever the adapter declares (a known deviation is declared
#: as such, and the case becomes an expected failure). The fingerprint observes them too.
BEHAVIOURS = frozenset({"empty_rows", "poison_scores", "poison_kv", "nonfinite", "extreme",
                        "arg_errors"})

#: The call's keywords behind each option and output feature: an adapter passes a keyword
#: only when the case needs its feature (so a callable is never handed an option it did not
#: declare, not even at its default value).
KEYWORDS: dict[str, tuple[str, ...]] = {
    "scale": ("scale",), "softcap": ("softcap",), "mask": ("mask",), "bias": ("bias",),
    "causal": ("causal",), "causal_lower_right": ("causal", "alignment"),
    "window": ("window",), "kv_lengths": ("kv_lengths",), "q_lengths": ("q_lengths",),
    "dropout": ("dropout_mask", "dropout_p"), "sinks": ("sinks",),
    "alibi": ("alibi_slopes",), "positions": ("q_positions", "kv_positions"),
    "segments": ("q_segment_ids", "kv_segment_ids"), "paged": ("block_table",),
    "score_mod": ("score_mod",),
    "mask_mod": ("mask_mod",), "lse": ("return_lse",),
    "weights": ("return_weights",),
}

#: Every option keyword of the call (no return flags), in a stable order: what adapters
#: forward to the implementation when a case holds it.
CALL_OPTIONS: tuple[str, ...] = tuple(dict.fromkeys(
    k for names in KEYWORDS.values() for k in names if not k.startswith("return_")))

#: Features a declared constraint (``exclusive``) may name: the options of a call.
OPTIONS = frozenset({"scale", "softcap", "mask", "bias", "causal", "causal_lower_right",
                     "window", "kv_lengths", "q_lengths", "dropout", "sinks", "alibi",
                     "positions", "segments", "paged", "score_mod", "mask_mod"})

#: Features that describe the shape of the inputs rather than an option: what a "basic"
#: case (one batch dim, Hq == Hkv, Lq == Lk, Dv == Dk, Lk > 0) needs none of.
SHAPES = frozenset({"batch0", "batch2", "gqa", "dv_ne_dk", "lq_ne_lk", "empty_keys"})


def violated(exclusive: tuple[frozenset[str], ...], needed: frozenset[str]) -> str | None:
    """The first declared constraint (a set of options at most one of which a call may
    use) that a case needing ``needed`` breaks, as ``"mask and bias"``; ``None`` if none."""
    for group in exclusive:
        used = sorted(group & needed)
        if len(used) > 1:
            return " and ".join(used)
    return None
