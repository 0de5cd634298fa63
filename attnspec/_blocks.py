"""The keep-mask of one block of scores: every rule that decides "may attend" (ATT-MASK-1),
evaluated for a (query rows x key columns) block from index arithmetic and the per-token
inputs, never from array data in Python, so that it traces under ``jax.jit`` and stays lazy
on Dask. The public builders (:mod:`.masks`) and both attention paths call it.

The diagonal: query row ``i`` is aligned with key ``i + offset`` where ``offset`` is 0 for
``alignment="upper_left"`` and ``kv_len - q_len`` for ``"lower_right"`` (ATT-CAUSAL-1/2).
Given positions (or segments, whose positions restart at each segment's start) replace the
indices: causal keeps ``kv_pos <= q_pos``, a window ``q_pos - left <= kv_pos <= q_pos +
right`` (ATT-POS-1, ATT-SEG-1).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._namespace import Array, Namespace, to_dtype
from ._validate import Window

Block = tuple[int, int]  # a half-open index range [start, stop)


class Tokens(NamedTuple):
    """Per-token coordinates in the index dtype, shaped to broadcast against the scores
    ``(*batch, H, Lq, Lk)``: queries ``(*batch, 1, Lq, 1)``, keys ``(*batch, 1, 1, Lk)``.
    ``None``: the indices (positions; shifted by the alignment offset) or one segment."""

    q_pos: Array | None = None
    kv_pos: Array | None = None
    q_seg: Array | None = None
    kv_seg: Array | None = None

    @property
    def positioned(self) -> bool:
        return self.q_pos is not None or self.kv_pos is not None


def _per_batch(lengths: Array, xp: Namespace) -> Array:
    """``(*batch,)`` -> ``(*batch, 1, 1, 1)``: one value per batch entry, broadcast over
    heads, query rows and keys."""
    return xp.reshape(lengths, (*lengths.shape, 1, 1, 1))


def band_limits(causal: bool, window: Window | None) -> tuple[int | None, int | None]:
    """``(left, right)`` of the diagonal band that causal and window keep together."""
    left = None if window is None else window[0]
    right = None if window is None else window[1]
    if causal:
        right = 0 if right is None else min(right, 0)
    return left, right


def static_offset(lq: int, lk: int, alignment: str, per_batch_lengths: bool,
                  tokens: Tokens | None = None) -> int | None:
    """The diagonal offset when it is known from shapes alone (``None``: it varies per batch
    entry with the lengths, or positions say where each token is, so only the data knows)."""
    if tokens is not None and tokens.positioned:
        return None
    if alignment == "upper_left":
        return 0
    return None if per_batch_lengths else lk - lq


def length_bounds(lengths: Array | None, length: int, xp: Namespace) -> tuple[int, int]:
    """The smallest and largest of ``lengths`` clipped to ``[0, length]`` (``length`` for
    both when not given), read from an eager array. The keys past every batch entry's
    ``kv_lengths`` (rows past every ``q_lengths``) are masked for all of them (ATT-LEN-1/2)
    and need never be read; those before every entry's length are real for all of them."""
    if lengths is None or 0 in lengths.shape:
        return length, length
    return (min(length, max(0, int(xp.min(lengths)))),
            min(length, max(0, int(xp.max(lengths)))))


def offset_range(lq: int, lk: int, alignment: str, kv_lengths: Array | None,
                 q_lengths: Array | None, xp: Namespace) -> tuple[int, int] | None:
    """The smallest and largest diagonal offset over the batch entries that attend anything,
    read from the lengths of eager arrays (``kv_len - q_len`` per entry for
    ``"lower_right"``, as :func:`relative_positions` has it): blocks outside the band for
    all of them can be skipped when the offset varies with the lengths (a padded causal
    batch, a paged prefill). An entry without keys or without rows has no band to keep
    (a finished sequence with ``kv_lengths`` 0 widens nothing). ``None``: no such entry."""
    if alignment == "upper_left":
        return 0, 0
    kv = lk if kv_lengths is None else kv_lengths
    q = lq if q_lengths is None else q_lengths
    offsets = kv - q
    if isinstance(offsets, int):
        return offsets, offsets
    live = None
    for n in (kv_lengths, q_lengths):
        if n is not None:
            live = n > 0 if live is None else live & (n > 0)
    if 0 in offsets.shape or not bool(xp.any(live)):
        return None
    return (int(xp.min(xp.where(live, offsets, xp.max(offsets)))),
            int(xp.max(xp.where(live, offsets, xp.min(offsets)))))


def band_offsets(lq: int, lk: int, limits: tuple[int | None, int | None], *,
                 alignment: str, kv_lengths: Array | None, q_lengths: Array | None,
                 tokens: Tokens | None, xp: Namespace,
                 readable: bool) -> tuple[int, int] | None:
    """The smallest and largest diagonal offset over the batch entries, for skipping and
    cutting keys (:func:`block_outside_band`, :func:`band_columns`): fixed by the shapes, or
    read from the lengths when the arrays' values can be (``readable``); ``None`` when there
    is no band or only the data knows (positions; lengths under a tracer)."""
    if limits == (None, None):
        return None
    per_batch = kv_lengths is not None or q_lengths is not None
    offset = static_offset(lq, lk, alignment, per_batch, tokens)
    if offset is not None:
        return offset, offset
    if readable and per_batch and (tokens is None or not tokens.positioned):
        return offset_range(lq, lk, alignment, kv_lengths, q_lengths, xp)
    return None


def block_outside_band(rows: Block, cols: Block, offsets: tuple[int, int] | None,
                       limits: tuple[int | None, int | None]) -> bool:
    """True when no (i, j) of the block lies in the band for any diagonal offset in
    ``offsets`` (the smallest and largest over the batch entries): the whole block is masked
    for every entry, and the chunked path may skip it. ``None``: not known, nothing skipped."""
    left, right = limits
    if offsets is None:
        return False
    low, high = offsets
    if right is not None and cols[0] > rows[1] - 1 + high + right:
        return True
    return left is not None and cols[1] - 1 < rows[0] + low - left


def band_columns(rows: Block, cols: Block, offsets: tuple[int, int],
                 limits: tuple[int | None, int | None]) -> Block:
    """``cols`` cut to the keys that some row of ``rows`` may attend under the band, for some
    diagonal offset in ``offsets`` (smallest, largest over the batch entries); empty
    (``start >= stop``) when none. The keys cut off are masked for every row of every entry,
    so leaving them out changes no result, and the work of a causal row block follows its
    diagonal instead of the whole key axis (ATT-CAUSAL-1, ATT-WINDOW-1)."""
    left, right = limits
    low, high = offsets
    start, stop = cols
    if right is not None:
        stop = min(stop, rows[1] + high + right)
    if left is not None:
        start = max(start, rows[0] + low - left)
    return start, max(start, stop)


def band_cut(rows: Block, cols: Block, offset: int,
             limits: tuple[int | None, int | None]) -> list[Block]:
    """The columns of a block (already :func:`band_columns`) where the band masks some row:
    only these need the band's mask; every row may attend every other column. At most two
    ranges, in order, not overlapping."""
    left, right = limits
    parts = []
    if left is not None:  # the last row's band starts furthest right
        stop = min(cols[1], rows[1] - 1 + offset - left)
        if stop > cols[0]:
            parts.append((cols[0], stop))
    if right is not None:  # the first row's band ends furthest left
        start = max(cols[0], rows[0] + offset + right + 1)
        if start < cols[1]:
            if parts and start <= parts[-1][1]:
                parts[-1] = (parts[-1][0], cols[1])
            else:
                parts.append((start, cols[1]))
    return parts


def _index(start: int, stop: int, xp: Namespace, device: Any) -> Array:
    return xp.arange(start, stop, device=device)


def relative_positions(
    lq: int, lk: int, *, alignment: str, kv_lengths: Array | None, q_lengths: Array | None,
    xp: Namespace, device: Any, rows: Block | None = None, cols: Block | None = None,
    tokens: Tokens | None = None,
) -> Array:
    """Key position minus query position for a block: ``j - (i + offset)`` from the indices,
    or ``kv_pos[j] - q_pos[i]`` from given positions; ``(rows, cols)``, or
    ``(*batch, 1, rows, cols)`` when it differs per batch entry. The one definition behind
    causal masks, windows (ATT-CAUSAL-1/2, ATT-WINDOW-1, ATT-POS-1) and ALiBi distances
    (ATT-ALIBI-1)."""
    rows, cols = rows or (0, lq), cols or (0, lk)
    if tokens is not None and tokens.positioned:
        if tokens.q_pos is None:
            q = xp.reshape(_index(*rows, xp, device), (rows[1] - rows[0], 1))
        else:
            q = tokens.q_pos[..., rows[0]:rows[1], :]
        if tokens.kv_pos is None:
            k = xp.reshape(_index(*cols, xp, device), (1, cols[1] - cols[0]))
        else:
            k = tokens.kv_pos[..., cols[0]:cols[1]]
        return k - q
    i = _index(*rows, xp, device)
    j = _index(*cols, xp, device)
    rel = xp.reshape(j, (1, cols[1] - cols[0])) - xp.reshape(i, (rows[1] - rows[0], 1))
    if alignment == "lower_right":
        kv = lk if kv_lengths is None else _per_batch(to_dtype(xp, kv_lengths, i.dtype), xp)
        q_len = lq if q_lengths is None else _per_batch(to_dtype(xp, q_lengths, i.dtype), xp)
        rel = rel - (kv - q_len)
    return rel


def band(
    lq: int, lk: int, *, causal: bool, window: Window | None, alignment: str,
    kv_lengths: Array | None, q_lengths: Array | None, xp: Namespace, device: Any,
    rows: Block | None = None, cols: Block | None = None, tokens: Tokens | None = None,
) -> Array | None:
    """What causal and window keep of a block; ``None`` when they keep everything."""
    left, right = band_limits(causal, window)
    if left is None and right is None:
        return None
    rel = relative_positions(lq, lk, alignment=alignment, kv_lengths=kv_lengths,
                             q_lengths=q_lengths, xp=xp, device=device, rows=rows, cols=cols,
                             tokens=tokens)
    keep = None
    if right is not None:
        keep = rel <= right
    if left is not None:
        lower = rel >= -left
        keep = lower if keep is None else keep & lower
    return keep


def lengths_keep(
    lq: int, lk: int, kv_lengths: Array | None, q_lengths: Array | None, xp: Namespace,
    device: Any, rows: Block | None = None, cols: Block | None = None,
) -> Array | None:
    rows, cols = rows or (0, lq), cols or (0, lk)
    keep = None
    if kv_lengths is not None:
        j = xp.reshape(_index(*cols, xp, device), (1, cols[1] - cols[0]))
        keep = j < _per_batch(kv_lengths, xp)
    if q_lengths is not None:
        i = xp.reshape(_index(*rows, xp, device), (rows[1] - rows[0], 1))
        in_rows = i < _per_batch(q_lengths, xp)
        keep = in_rows if keep is None else keep & in_rows
    return keep


def segments_keep(tokens: Tokens | None, rows: Block, cols: Block) -> Array | None:
    """Same segment, and not padding (a negative id): ATT-SEG-1."""
    if tokens is None or tokens.q_seg is None or tokens.kv_seg is None:
        return None
    q = tokens.q_seg[..., rows[0]:rows[1], :]
    return (q == tokens.kv_seg[..., cols[0]:cols[1]]) & (q >= 0)


def slice_block(x: Array | None, rows: Block, cols: Block) -> Array | None:
    """The ``[rows, cols]`` block of an array broadcastable to ``(..., Lq, Lk)``; axes of size
    1 (broadcast) are kept whole."""
    if x is None:
        return None
    ci = slice(None) if x.shape[-1] == 1 else slice(*cols)
    if x.ndim == 1:
        return x[ci]
    ri = slice(None) if x.shape[-2] == 1 else slice(*rows)
    return x[..., ri, ci]


def block_keep(
    lq: int, lk: int, rows: Block, cols: Block, *, mask: Array | None, causal: bool,
    window: Window | None, alignment: str, kv_lengths: Array | None, q_lengths: Array | None,
    xp: Namespace, device: Any, tokens: Tokens | None = None,
) -> Array | None:
    """Everything that decides "may attend", for one block (arguments already validated);
    ``None`` when nothing masks."""
    segmented = tokens is not None and tokens.q_seg is not None and tokens.kv_seg is not None
    if (mask is None and not causal and window is None and kv_lengths is None
            and q_lengths is None and not segmented):
        return None  # decided without building anything: 2 us of a decode call's ~15 us
    in_band = band(
        lq, lk, causal=causal, window=window, alignment=alignment, kv_lengths=kv_lengths,
        q_lengths=q_lengths, xp=xp, device=device, rows=rows, cols=cols, tokens=tokens,
    )
    lengths = lengths_keep(lq, lk, kv_lengths, q_lengths, xp, device, rows, cols)
    return and_masks(slice_block(mask, rows, cols), in_band, lengths,
                     segments_keep(tokens, rows, cols))


def key_padding(lk: int, kv_lengths: Array, xp: Namespace, device: Any,
                start: int = 0) -> Array:
    """``(*batch, 1, lk - start, 1)``: True for real keys among keys ``start:lk``. Used to
    zero padded K and V rows, so that NaN or inf stored in a KV cache's unused slots cannot
    reach the output (ATT-LEAK-2)."""
    j = xp.reshape(_index(start, lk, xp, device), (lk - start, 1))
    return j < xp.reshape(kv_lengths, (*kv_lengths.shape, 1, 1, 1))


def and_masks(*masks: Array | None) -> Array | None:
    """Logical AND of masks already validated to broadcast; ``None`` entries are ignored."""
    out = None
    for m in masks:
        if m is None:
            continue
        out = m if out is None else out & m
    return out
