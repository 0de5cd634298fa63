"""The direct path: the whole score matrix at once (fastest for short sequences, and the
only way to return the weights without recomputing them)."""

from __future__ import annotations

from ._blocks import Block
from ._namespace import Array
from ._normalizer import log_normalizer, normalizer
from ._problem import Problem, block_scores, dropped, output, weighted_values


def direct(p: Problem, cols: Block | None = None) -> list[Array]:
    """``[out]`` plus ``lse`` and/or ``weights`` as the call asks (``return_lse``,
    ``return_weights``: then ``cols`` is all of the keys). ``cols``: the keys that may be
    attended at all (the others are masked for every row: past every ``kv_lengths``,
    outside the band); all of them by default."""
    xp, shape = p.xp, p.shape
    rows = (0, shape.lq)
    if cols is None:
        cols = (0, shape.lk)
    elif cols[0] >= cols[1]:  # no key may be attended: an empty block, every row empty
        cols = (0, 0)
    n = normalizer(block_scores(p, rows, cols), -1, xp, p.sinks)
    weights = dropped(p, n.exp, rows, cols)
    results = [output(p, weighted_values(p, weights, cols) / n.safe_total)]
    if p.call.return_lse:
        results.append(xp.squeeze(log_normalizer(n, xp), axis=-1))
    if p.call.return_weights:
        results.append(output(p, weights / n.safe_total))
    return results
