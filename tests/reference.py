"""Independent float64 NumPy oracle for the attnspec specification.

Written from the rules in ``docs/spec.md`` alone, never from attnspec's code, so that the
two implementations can only agree by both being right.  Everything is a plain per-row loop:
for each batch index, head and query row the set of attended keys is spelled out from the
explicit conditions, then the row is reduced with ``math.fsum``.  Slow on purpose; use small
shapes.

``tests/test_reference.py`` checks this module against PyTorch and SciPy where their
semantics coincide with the spec.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = ["ref_attention", "ref_log_softmax", "ref_logsumexp", "ref_softmax"]


def _f64(x):
    return None if x is None else np.asarray(x, dtype=np.float64)


def _sum(terms):
    """Exactly rounded sum with IEEE results for non-finite terms (``math.fsum`` raises)."""
    terms = list(terms)
    if any(math.isnan(t) for t in terms) or (math.inf in terms and -math.inf in terms):
        return math.nan
    if math.inf in terms or -math.inf in terms:
        return math.inf if math.inf in terms else -math.inf
    try:
        return math.fsum(terms)
    except OverflowError:  # finite terms whose exact sum exceeds the float64 range
        return math.copysign(math.inf, sum(terms))


def _row_lse(vals):
    """Log-sum-exp of a list of floats, with the spec's inf/NaN rules.

    Returns -inf for an empty row (or one whose entries are all -inf), NaN when any entry is
    NaN, and +inf when any entry is +inf.
    """
    if any(math.isnan(x) for x in vals):
        return math.nan
    if any(x == math.inf for x in vals):
        return math.inf
    finite = [x for x in vals if x != -math.inf]
    if not finite:
        return -math.inf
    m = max(finite)
    return m + math.log(math.fsum(math.exp(x - m) for x in finite))


def _row_probs(vals, lse):
    """Softmax probabilities of one row given its lse (NaN row when lse is not finite-or--inf)."""
    if math.isnan(lse) or lse == math.inf:
        return [math.nan] * len(vals)
    if lse == -math.inf:
        return [0.0] * len(vals)
    m = max(x for x in vals if x != -math.inf)
    # Normalise against the max-shifted sum so the largest term is exp(0) = 1 exactly.
    den = math.fsum(math.exp(x - m) for x in vals if x != -math.inf)
    return [0.0 if x == -math.inf else math.exp(x - m) / den for x in vals]


def _offset(alignment, q_len, kv_len):
    if alignment == "upper_left":
        return 0
    if alignment == "lower_right":
        return kv_len - q_len
    raise ValueError(f"alignment must be 'upper_left' or 'lower_right', got {alignment!r}")


def ref_attention(
    q,
    k,
    v,
    *,
    mask=None,
    bias=None,
    causal=False,
    window=None,
    alignment="upper_left",
    scale=None,
    softcap=None,
    sinks=None,
    alibi_slopes=None,
    q_positions=None,
    kv_positions=None,
    q_segment_ids=None,
    kv_segment_ids=None,
    score_mod=None,
    mask_mod=None,
    block_table=None,
    kv_lengths=None,
    q_lengths=None,
    dropout_mask=None,
    dropout_p=0.0,
):
    """Scaled dot-product attention by explicit per-row loops, in float64.

    Parameters
    ----------
    q, k, v : array_like
        ``(*batch, Hq, Lq, Dk)``, ``(*batch, Hkv, Lk, Dk)``, ``(*batch, Hkv, Lk, Dv)``; the
        batch dims broadcast.
    mask : array_like of bool, optional
        True = may attend; broadcastable to ``(*batch, Hq, Lq, Lk)``.
    bias : array_like, optional
        Added to the (soft-capped) scores; ``-inf`` masks.
    causal : bool
        Keep ``j <= i + offset``.
    window : tuple of (int or None, int or None), optional
        Keep ``i + offset - left <= j <= i + offset + right``.
    alignment : {"upper_left", "lower_right"}
        Offset 0, or ``kv_len[b] - q_len[b]`` per batch element.
    scale, softcap : float, optional
        Score scale (default ``1/sqrt(Dk)``) and tanh soft-cap.
    sinks : array_like, optional
        One extra logit per row of each head, broadcastable to ``(*batch, Hq)``, in the
        denominator only.
    alibi_slopes : array_like, optional
        One slope per head, broadcastable to ``(*batch, Hq)``: ``slope * |i + offset - j|``
        is subtracted from the score after the bias.
    q_positions, kv_positions : array_like of int, optional
        ``(*batch, Lq)`` / ``(*batch, Lk)``: causal, window and ALiBi compare these instead
        of ``i + offset`` and ``j`` (a side not given is its indices).
    q_segment_ids, kv_segment_ids : array_like of int, optional
        A pair is attended only when both ids are equal and not negative; positions (when
        not given) count the tokens of the same id before, queries shifted by the
        segment's key count minus query count for lower-right alignment.
    score_mod, mask_mod : callable, optional
        Called once per score with scalars, as FlexAttention's vmap does:
        ``score_mod(s, b, h, i, j)`` after softcap, ``mask_mod(b, h, i, j)``; ``b`` is the
        flat batch index.
    block_table : array_like of int, optional
        ``(*batch, max_pages)``: ``k`` and ``v`` are page pools ``(num_pages, Hkv, page,
        D)``; the dense caches are assembled page by page (live pages only, the rest zeros).
    kv_lengths, q_lengths : array_like of int, optional
        Shape ``(*batch,)``; keys ``j >= kv_len`` are masked, rows ``i >= q_len`` are padding.
    dropout_mask : array_like of bool, optional
        Keep-mask; kept weights are scaled by ``1 / (1 - dropout_p)``.
    dropout_p : float

    Returns
    -------
    out : ndarray
        ``(*batch, Hq, Lq, Dv)`` float64.
    lse : ndarray
        ``(*batch, Hq, Lq)`` float64 log-sum-exp over attended keys (before dropout).
    weights : ndarray
        ``(*batch, Hq, Lq, Lk)`` float64; the matrix that multiplies ``v`` (after dropout).
    """
    q, k, v = _f64(q), _f64(k), _f64(v)
    if block_table is not None:
        k, v = (_assemble(pool, np.asarray(block_table), np.asarray(kv_lengths))
                for pool in (k, v))
    hq, lq, dk = q.shape[-3:]
    hkv, lk, dk2 = k.shape[-3:]
    if dk != dk2 or v.shape[-3] != hkv or v.shape[-2] != lk:
        raise ValueError(f"incompatible q/k/v shapes {q.shape}, {k.shape}, {v.shape}")
    if hq % hkv:
        raise ValueError(f"Hq={hq} is not a multiple of Hkv={hkv}")
    dv = v.shape[-1]
    batch = np.broadcast_shapes(q.shape[:-3], k.shape[:-3], v.shape[:-3])
    full = (*batch, hq, lq, lk)
    q = np.broadcast_to(q, (*batch, hq, lq, dk))
    k = np.broadcast_to(k, (*batch, hkv, lk, dk))
    v = np.broadcast_to(v, (*batch, hkv, lk, dv))
    mask = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), full)
    bias = None if bias is None else np.broadcast_to(_f64(bias), full)
    keep = None if dropout_mask is None else np.broadcast_to(np.asarray(dropout_mask, bool), full)
    kv_len = None if kv_lengths is None else np.broadcast_to(np.asarray(kv_lengths), batch)
    q_len = None if q_lengths is None else np.broadcast_to(np.asarray(q_lengths), batch)
    sink = None if sinks is None else np.broadcast_to(_f64(sinks), (*batch, hq))
    slopes = None if alibi_slopes is None else np.broadcast_to(_f64(alibi_slopes), (*batch, hq))
    qpos = None if q_positions is None else np.broadcast_to(np.asarray(q_positions), (*batch, lq))
    kpos = None if kv_positions is None else np.broadcast_to(np.asarray(kv_positions),
                                                             (*batch, lk))
    qseg = None if q_segment_ids is None else np.broadcast_to(np.asarray(q_segment_ids),
                                                              (*batch, lq))
    kseg = None if kv_segment_ids is None else np.broadcast_to(np.asarray(kv_segment_ids),
                                                               (*batch, lk))
    scale = 1.0 / math.sqrt(dk) if scale is None else float(scale)
    left, right = (None, None) if window is None else window
    group = hq // hkv
    drop_scale = 1.0 / (1.0 - dropout_p)

    out = np.zeros((*batch, hq, lq, dv))
    lse = np.full((*batch, hq, lq), -np.inf)
    weights = np.zeros(full)
    for b in itertools.product(*(range(n) for n in batch)):
        n_k = lk if kv_len is None else int(kv_len[b])
        n_q = lq if q_len is None else int(q_len[b])
        off = _offset(alignment, n_q, n_k)
        qp, kp = _token_positions(b, lq, lk, off, alignment, qpos, kpos,
                                  qseg, kseg)
        flat_b = np.int64(np.ravel_multi_index(b, batch) if batch else 0)
        for h in range(hq):
            g = h // group
            for i in range(lq):
                if i >= n_q:
                    continue  # padding row: stays out 0, lse -inf, weights 0
                idx = (*b, h, i)
                attended, scores = [], []
                for j in range(lk):
                    if j >= n_k:
                        continue
                    if mask is not None and not mask[(*idx, j)]:
                        continue
                    if qseg is not None and (qseg[(*b, i)] < 0
                                             or qseg[(*b, i)] != kseg[(*b, j)]):
                        continue
                    if causal and kp[j] > qp[i]:
                        continue
                    if mask_mod is not None and not bool(
                            mask_mod(flat_b, np.int64(h), np.int64(i), np.int64(j))):
                        continue
                    if left is not None and kp[j] < qp[i] - left:
                        continue
                    if right is not None and kp[j] > qp[i] + right:
                        continue
                    if bias is not None and bias[(*idx, j)] == -math.inf:
                        continue
                    s = _sum(
                        float(a) * float(c) for a, c in zip(q[idx], k[(*b, g, j)], strict=True)
                    )
                    s *= scale
                    if softcap is not None:
                        s = softcap * math.tanh(s / softcap)
                    if score_mod is not None:
                        s = float(score_mod(np.float64(s), flat_b, np.int64(h), np.int64(i),
                                            np.int64(j)))
                    if bias is not None:
                        s += float(bias[(*idx, j)])
                    if slopes is not None:
                        s -= float(slopes[(*b, h)]) * abs(qp[i] - kp[j])
                    attended.append(j)
                    scores.append(s)
                if sink is None:
                    row_lse = _row_lse(scores)
                    probs = _row_probs(scores, row_lse)
                else:  # the sink: one more logit in the row, with no value
                    row = [*scores, float(sink[(*b, h)])]
                    row_lse = _row_lse(row)
                    probs = _row_probs(row, row_lse)[:-1]
                lse[idx] = row_lse
                for j, p in zip(attended, probs, strict=True):
                    if keep is not None:
                        p = p * drop_scale if keep[(*idx, j)] else 0.0
                    weights[(*idx, j)] = p
                for c in range(dv):
                    terms = [weights[(*idx, j)] * float(v[(*b, g, j, c)]) for j in attended]
                    out[(*idx, c)] = _sum(terms)
    return out, lse, weights


def _assemble(pool, table, kv_lengths):
    """The dense cache ``(*batch, Hkv, pages * page, D)`` of a paged one, token by token:
    slot ``j`` of sequence ``b`` is token ``j % page`` of page ``table[b, j // page]`` while
    ``j < kv_lengths[b]``, else 0 (never read)."""
    _, hkv, page, d = pool.shape
    batch = table.shape[:-1]
    lengths = np.broadcast_to(kv_lengths, batch)
    out = np.zeros((*batch, hkv, table.shape[-1] * page, d))
    for b in itertools.product(*(range(n) for n in batch)):
        for j in range(int(lengths[b])):
            out[(*b, slice(None), j)] = pool[int(table[(*b, j // page)]), :, j % page]
    return out


def _token_positions(b, lq, lk, off, alignment, qpos, kpos, qseg, kseg):
    """Each query's and key's position for batch entry ``b``, written out token by token."""
    if qpos is not None or kpos is not None:
        qp = list(range(lq)) if qpos is None else [int(x) for x in qpos[b]]
        kp = list(range(lk)) if kpos is None else [int(x) for x in kpos[b]]
        return qp, kp
    if qseg is None:
        return [i + off for i in range(lq)], list(range(lk))
    q_ids, k_ids = [int(x) for x in qseg[b]], [int(x) for x in kseg[b]]
    qp = [q_ids[:i].count(q_ids[i]) for i in range(lq)]
    kp = [k_ids[:j].count(k_ids[j]) for j in range(lk)]
    if alignment == "lower_right":
        qp = [p + k_ids.count(q_ids[i]) - q_ids.count(q_ids[i]) for i, p in enumerate(qp)]
    return qp, kp


def _rows(x, where, axis):
    """Move ``axis`` to the end and flatten the rest: returns (rows, where_rows, restore)."""
    x = _f64(x)
    where = np.ones(x.shape, bool) if where is None else np.broadcast_to(where, x.shape)
    xm = np.moveaxis(x, axis, -1)
    wm = np.moveaxis(where, axis, -1)
    shape = xm.shape
    n = math.prod(shape[:-1])  # not -1: that cannot be inferred when the axis has length 0
    return xm.reshape(n, shape[-1]), wm.reshape(n, shape[-1]), shape


def ref_logsumexp(x, *, axis=-1, keepdims=False, where=None):
    """Float64 log-sum-exp along one axis; ``where=False`` entries and -inf carry no mass."""
    rows, wrows, shape = _rows(x, where, axis)
    res = np.array(
        [
            _row_lse([float(a) for a, w in zip(r, wr, strict=True) if w])
            for r, wr in zip(rows, wrows, strict=True)
        ]
    )
    res = res.reshape(shape[:-1])
    if keepdims:
        res = np.expand_dims(res, axis)
    return res


def ref_softmax(x, *, axis=-1, where=None):
    """Float64 softmax along one axis; excluded entries give 0, empty rows give all 0."""
    rows, wrows, shape = _rows(x, where, axis)
    out = np.zeros(rows.shape)
    for n, (r, wr) in enumerate(zip(rows, wrows, strict=True)):
        cols = [c for c in range(r.shape[0]) if wr[c]]
        vals = [float(r[c]) for c in cols]
        for c, p in zip(cols, _row_probs(vals, _row_lse(vals)), strict=True):
            out[n, c] = p
    return np.moveaxis(out.reshape(shape), -1, axis)


def ref_log_softmax(x, *, axis=-1, where=None):
    """Float64 log-softmax along one axis; excluded entries and empty rows give -inf.

    Computed as ``(x - max) - log(sum(exp(x - max)))``, not ``x - logsumexp(x)``: near the
    dtype's max, logsumexp rounds to the max itself and the difference would lose ``log n``.
    """
    rows, wrows, shape = _rows(x, where, axis)
    out = np.full(rows.shape, -np.inf)
    for n, (r, wr) in enumerate(zip(rows, wrows, strict=True)):
        cols = [c for c in range(r.shape[0]) if wr[c]]
        vals = [float(r[c]) for c in cols]
        lse = _row_lse(vals)
        if lse == -math.inf:
            continue
        if math.isnan(lse) or lse == math.inf:
            out[n, cols] = math.nan
            continue
        m = max(a for a in vals if a != -math.inf)
        log_den = math.log(math.fsum(math.exp(a - m) for a in vals if a != -math.inf))
        for c, a in zip(cols, vals, strict=True):
            if a != -math.inf:
                out[n, c] = (a - m) - log_den
    return np.moveaxis(out.reshape(shape), -1, axis)
