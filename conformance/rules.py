"""The spec's rule IDs with one-line titles (docs/spec.md holds the normative text).

``tests/test_conformance_catalog.py`` keeps this table and docs/spec.md in step, and fails
when a rule has no case in the catalog.
"""

from __future__ import annotations

RULES: dict[str, str] = {
    "SMX-1": "softmax = exp(x - max) / sum; -inf means no mass",
    "SMX-2": "where=False entries are excluded whatever they hold",
    "SMX-3": "an empty row gives softmax 0, log_softmax -inf, logsumexp -inf",
    "SMX-4": "NaN in a row makes it NaN; +inf makes softmax NaN and logsumexp +inf",
    "SMX-5": "real floating input; output dtype = input dtype; half precision in float32",
    "ATT-SHAPE-1": "layout (*batch, H, L, D); batch dims broadcast",
    "ATT-GQA-1": "query head h reads kv head h // (Hq // Hkv)",
    "ATT-SCORE-1": "s = (q @ k^T) * scale, default 1/sqrt(Dk)",
    "ATT-SOFTCAP-1": "s = c * tanh(s / c) after scale, before bias and masks",
    "ATT-BIAS-1": "additive bias; a -inf entry masks its position",
    "ATT-MASK-1": "bool mask, True = may attend",
    "ATT-CAUSAL-1": "causal keeps j <= i (upper_left)",
    "ATT-CAUSAL-2": "lower_right causal: offset kv_len - q_len",
    "ATT-WINDOW-1": "window (left, right) around the aligned diagonal",
    "ATT-LEN-1": "kv_lengths masks keys j >= kv_len",
    "ATT-LEN-2": "q_lengths padding rows output 0",
    "ATT-LSE-1": "lse = log sum exp of the attended scores",
    "ATT-WEIGHTS-1": "weights multiply V (after dropout)",
    "ATT-DROPOUT-1": "caller keep-mask, kept weights scaled by 1/(1-p)",
    "ATT-EMPTY-1": "a fully masked row gives out 0, lse -inf, weights 0",
    "ATT-SINK-1": "sinks: one extra logit per row in the denominator and in lse; a row with "
                  "nothing to attend gives out 0, lse = its sink",
    "ATT-ALIBI-1": "ALiBi: -slope * |q_pos - kv_pos| added after the bias, positions shifted "
                   "by the alignment offset",
    "ATT-POS-1": "positions: causal keeps kv_pos <= q_pos, a window q_pos - left <= kv_pos <= "
                 "q_pos + right, ALiBi reads |q_pos - kv_pos|; alignment is default positions",
    "ATT-SEG-1": "segments (packed varlen): a query attends only its own segment's keys, a "
                 "negative id is padding; causal, window, alignment and ALiBi apply per "
                 "segment, positions restarting at its start",
    "ATT-SEG-2": "NaN/inf in padding tokens' K/V and in keys of other segments never reach "
                 "a segment's output",
    "ATT-PAGE-1": "paged KV cache: the keys of sequence b are its block_table pages in order; "
                  "entries past its last live page are never read, whatever they hold; "
                  "pages may be shared",
    "ATT-MOD-1": "FlexAttention mods: score_mod(score, b, h, q_idx, kv_idx) after softcap and "
                 "before the bias; mask_mod(b, h, q_idx, kv_idx) ANDed with every other mask",
    "ATT-LEAK-1": "NaN/inf at masked scores or bias never reach the output",
    "ATT-LEAK-2": "NaN/inf in K/V past kv_lengths never reach the output",
    "ATT-NAN-1": "NaN in an attended score propagates to its row",
    "ATT-BOUND-1": "output inside the convex hull of attended V rows",
    "ATT-PROP-1": "one attended key -> that V row",
    "ATT-PROP-2": "equal scores -> mean of attended V rows",
    "ATT-PROP-3": "permuting keys with values changes nothing",
    "ATT-PROP-4": "a constant added to a row's logits changes nothing",
    "ATT-DTYPE-1": "one real floating dtype in, the same dtype out",
    "ATT-DTYPE-2": "half precision accumulates in float32",
    "ATT-ARG-1": "invalid arguments raise TypeError/ValueError",
    "ATT-GRAD-1": "masked keys, masked positions and empty rows get zero gradient, never NaN",
    "ATT-GRAD-2": "dq, dk, dv, dbias, dsinks, dalibi_slopes are the exact VJP of out, graded "
                  "like outputs",
    "ATT-CONS-1": "a row's outputs do not depend on the rest of the batch or pack (within "
                  "twice the tolerance; bitwise for a declared batch_invariant)",
    "ATT-CONS-2": "split-KV merged, prefill in chunks and a paged cache agree with the whole "
                  "call within twice the tolerance",
    "ATT-DET-1": "a deterministic implementation repeats a call bit for bit",
    "MHA-1": "multi-head attention = projections + sdpa + output projection",
}

#: The conformance runner's own rule, outside docs/spec.md (no spec ID: the spec defines what
#: a call computes, this is what running it must not do). A case whose call changed one of its
#: input arrays fails under it, besides the case's own rules.
NO_MUTATION_RULE = "NO-MUTATION"
RUNNER_RULES: dict[str, str] = {
    NO_MUTATION_RULE: "an implementation leaves its input arrays unchanged",
}


def rule_title(rule: str) -> str:
    """The one-line title of a spec rule or a runner rule ("" for an unknown ID)."""
    return RULES.get(rule) or RUNNER_RULES.get(rule, "")
