"""scaled_dot_product_attention: argument checks, then the direct or the chunked path."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import array_api_compat

from . import _call as call_check
from . import _fast, _parallel
from . import _validate as check
from . import native as _native
from ._blocks import band_columns, band_limits, band_offsets, static_offset
from ._cache import real_cache
from ._chunked import chunked
from ._direct import direct
from ._namespace import (
    ACCELERATOR,
    Array,
    Namespace,
    accumulation_dtype,
    device_kind,
    to_dtype,
)
from ._namespace import (
    readable as read_ok,
)
from ._problem import Problem, default_scale
from .masks import Window
from .native import Plan
from .segments import resolve_tokens

__all__ = ["choose_blocks", "native_plan", "scaled_dot_product_attention"]

#: ``chunk_size=None`` keeps one block of float32 scores (all batch entries and heads, a slab
#: of query rows, a span of keys) near this size: small enough to stay in the CPU caches
#: between the matmul, the exponential and the second matmul, which is where the fused
#: kernels get their speed. Measured on a 2-core Xeon (benchmarks/): 2-8 MiB is the plateau.
BLOCK_BYTES = 4 * 2**20
#: Accelerators and lazy graphs (JAX under jit, Dask) want few, large blocks instead: every
#: block is a kernel launch or a graph node, and XLA/Dask schedule memory themselves.
LARGE_BLOCK_BYTES = 256 * 2**20
#: Key block length when a slab of ``ROW_QUANTUM`` rows over all keys exceeds the budget.
BLOCK_K = 8192
#: Query blocks are multiples of this many rows (no ragged BLAS panels), unless Lq is smaller.
ROW_QUANTUM = 16
#: Key block length for packed sequences on eager arrays: blocks that share no segment are
#: skipped, so a block should be no longer than a typical sequence (a key block spanning the
#: whole packed row would make every block live). 512 keys x 256 rows x 8 heads is the
#: 4 MiB block; measured in benchmarks/varlen.py.
SEGMENT_BLOCK_K = 512
#: A causal or windowed call on eager arrays is split into at least this many query blocks
#: (of at least ``ROW_QUANTUM`` rows), each reading only the keys its rows may attend: the
#: work is then (1 + 1/8) / 2 of the full matrix for causal instead of all of it.
BAND_ROW_BLOCKS = 8
#: ... from this many query rows on (below it one block is cheaper than the skipping).
BAND_MIN_ROWS = 128


def choose_blocks(shape: check.AttentionShape, chunk_size: int | tuple[int, int] | None,
                  return_weights: bool, large: bool = False,
                  segmented: bool = False, banded: bool = False,
                  threads: int = 1) -> tuple[int, int] | None:
    """``(block_q, block_k)`` for the chunked path, or ``None`` for the direct path.

    ``large``: the arrays live on an accelerator or in a lazy graph (see
    :data:`LARGE_BLOCK_BYTES`). ``segmented``: packed sequences on eager arrays, whose key
    blocks stay short enough to skip (:data:`SEGMENT_BLOCK_K`). ``banded``: a causal or
    window band whose diagonal the shapes fix, on eager arrays (:data:`BAND_ROW_BLOCKS`).
    ``threads``: the query blocks run on that many threads (at least two blocks each).
    """
    heads = shape.heads
    if chunk_size == 0 or 0 in (shape.lq, shape.lk, heads):
        return None
    if chunk_size is not None:
        return (chunk_size, chunk_size) if isinstance(chunk_size, int) else (
            chunk_size[0], chunk_size[1])
    budget = LARGE_BLOCK_BYTES if large else BLOCK_BYTES
    if return_weights or (large and heads * shape.lq * shape.lk * 4 <= budget):
        return None
    # All keys in one block when a minimal slab of rows fits (decode: Lq = 1 against a long
    # cache), so no running rescale is needed; else key blocks of BLOCK_K.
    slab = heads * min(shape.lq, ROW_QUANTUM) * shape.lk * 4
    block_k = shape.lk if slab <= budget else min(shape.lk, BLOCK_K)
    if segmented:
        block_k = min(block_k, SEGMENT_BLOCK_K)
    rows = budget // (4 * heads * block_k)
    block_q = max(ROW_QUANTUM, rows - rows % ROW_QUANTUM)
    wanted = BAND_ROW_BLOCKS if banded and shape.lq >= BAND_MIN_ROWS else 1
    if threads > 1:
        wanted = max(wanted, 2 * threads)
    if wanted > 1:
        rows = -(-shape.lq // wanted)
        block_q = min(block_q, max(ROW_QUANTUM, -(-rows // ROW_QUANTUM) * ROW_QUANTUM))
    if block_q >= shape.lq and block_k == shape.lk:
        return None  # one block is the direct path, without the running statistics
    return min(shape.lq, block_q), block_k


def _large_blocks(x: Array) -> bool:
    """Large blocks for lazy arrays (traced JAX, Dask) and for accelerator memory."""
    return array_api_compat.is_lazy_array(x) or device_kind(x) == ACCELERATOR


def scaled_dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    /,
    *,
    mask: Array | None = None,
    bias: Array | None = None,
    causal: bool = False,
    window: Window | None = None,
    alignment: str = "upper_left",
    scale: float | None = None,
    softcap: float | None = None,
    sinks: Array | None = None,
    alibi_slopes: Array | None = None,
    q_positions: Array | None = None,
    kv_positions: Array | None = None,
    q_segment_ids: Array | None = None,
    kv_segment_ids: Array | None = None,
    score_mod: Callable[..., Array] | None = None,
    mask_mod: Callable[..., Array] | None = None,
    block_table: Array | None = None,
    kv_lengths: Array | int | None = None,
    q_lengths: Array | int | None = None,
    dropout_mask: Array | None = None,
    dropout_p: float = 0.0,
    return_lse: bool = False,
    return_weights: bool = False,
    chunk_size: int | tuple[int, int] | None = None,
    implementation: str = "portable",
    xp: Namespace | None = None,
) -> Array | tuple[Array, ...]:
    """Scaled dot-product attention as defined by ``docs/spec.md``.

    Parameters
    ----------
    query : array, shape ``(*batch, Hq, Lq, Dk)``
    key : array, shape ``(*batch, Hkv, Lk, Dk)``
    value : array, shape ``(*batch, Hkv, Lk, Dv)``
        One real floating dtype for all three. ``Hq`` must be a multiple of ``Hkv``: query
        head ``h`` reads key/value head ``h // (Hq // Hkv)`` (grouped-query attention).
        Batch dimensions broadcast.
    mask : bool array, optional
        True = may attend; broadcastable to ``(*batch, Hq, Lq, Lk)``.
    bias : float array, optional
        Added to the scores; broadcastable to ``(*batch, Hq, Lq, Lk)``. A ``-inf`` entry
        masks its position.
    causal : bool
        Keep keys ``j <= i + offset``.
    window : (left, right), optional
        Keep keys ``i + offset - left <= j <= i + offset + right``; ``None`` sides are
        unbounded.
    alignment : {"upper_left", "lower_right"}
        ``offset`` is 0 (torch ``is_causal``, JAX) or ``kv_len - q_len`` (flash-attention,
        KV-cache decode), per batch entry when lengths are given.
    scale : float, optional
        Score scale; default ``1 / sqrt(Dk)``.
    softcap : float, optional
        ``s = softcap * tanh(s / softcap)`` after scaling, before bias and masks.
    sinks : float array, optional
        Attention sinks (gpt-oss): one extra logit per row, broadcastable to
        ``(*batch, Hq)``, in the softmax's denominator only (it attends no value), so the
        weights of a row sum to less than 1 and ``lse`` includes it. A row with nothing to
        attend gives out 0 and lse = its sink.
    alibi_slopes : float array, optional
        ALiBi: ``-slope * |q_pos - kv_pos|`` is added to the scores after ``bias``, one
        slope per head, broadcastable to ``(*batch, Hq)``; positions are the indices, the
        query's shifted by the alignment offset (so with ``alignment="lower_right"`` the
        last query row is at distance 0 from the last key, as in flash-attention).
    q_positions, kv_positions : integer array, optional
        Where each query / key sits, broadcastable to ``(*batch, Lq)`` / ``(*batch, Lk)``:
        causal keeps ``kv_pos <= q_pos``, a window ``q_pos - left <= kv_pos <= q_pos +
        right``, ALiBi reads ``|q_pos - kv_pos|`` (chunked prefill, context-parallel shards,
        caches with holes). A side not given is its indices. Not with
        ``alignment="lower_right"``, which is the default positions shifted by
        ``kv_len - q_len``.
    q_segment_ids, kv_segment_ids : integer array, optional
        Packed sequences (varlen), both broadcastable to ``(*batch, Lq)`` / ``(*batch, Lk)``:
        a pair is attended only when the ids are equal; a negative id is padding (attends
        nothing, never attended, its K/V never read). Causal, window, alignment and ALiBi
        apply per segment, positions restarting at each segment's start (given positions
        take precedence). :func:`attnspec.segment_ids_from_cu_seqlens` converts
        flash-attention's ``cu_seqlens``.
    score_mod, mask_mod : callable, optional
        FlexAttention's ``score_mod(score, b, h, q_idx, kv_idx) -> score`` (after softcap,
        before ``bias``) and ``mask_mod(b, h, q_idx, kv_idx) -> bool`` (True = may attend),
        called per block with broadcasting index arrays: ``b`` the flat batch index
        ``(*batch, 1, 1, 1)``, ``h`` ``(Hq, 1, 1)``, ``q_idx`` ``(rows, 1)``, ``kv_idx``
        ``(1, cols)``. The chunked path skips blocks ``mask_mod`` empties on eager arrays.
    block_table : integer array, optional
        A paged KV cache (vLLM, FlashInfer): ``key`` and ``value`` are then page pools
        ``(num_pages, Hkv, page_size, D)`` and ``block_table`` ``(*batch, max_pages)`` lists
        each sequence's pages in order; ``kv_lengths`` is required. Entries past a
        sequence's last live page are never read, whatever they hold; pages may be shared.
        On eager arrays a live entry outside the pool is a ``ValueError`` and only the pages
        up to the longest sequence's last are gathered (``attnspec.paged``).
    kv_lengths, q_lengths : integer array of shape ``(*batch,)`` or int, optional
        Keys ``j >= kv_lengths[b]`` are padding (their K/V content never reaches the
        output); query rows ``i >= q_lengths[b]`` are padding and output 0.
    dropout_mask : bool array, optional
        Caller-drawn keep-mask broadcastable to ``(*batch, Hq, Lq, Lk)``; kept weights are
        scaled by ``1 / (1 - dropout_p)``.
    dropout_p : float
        Drop probability in ``[0, 1)`` the mask was drawn with.
    return_lse, return_weights : bool
        Also return the log-sum-exp of the masked scores, shape ``(*batch, Hq, Lq)`` in
        float32 (float64 for float64 input), and/or the weights that multiply ``value``
        (after dropout), shape ``(*batch, Hq, Lq, Lk)``.
    chunk_size : int or (int, int), optional
        ``0``: the direct path (the whole ``Lq x Lk`` score matrix at once). ``n > 0`` or
        ``(block_q, block_k)``: the chunked path, query x key blocks with a running max and
        sum (online softmax) in O(block) working memory; blocks outside the causal/window
        band are skipped. ``None`` (default): direct while the score matrix is small
        (<= 64 MiB) or the weights are requested, chunked otherwise. Both paths give the
        same results up to rounding.
    implementation : {"portable", "auto", "native"}
        ``"portable"`` (default): attnspec's own Array API code. ``"native"``: the
        framework's fused kernel (torch SDPA, ``jax.nn.dot_product_attention``; see
        :mod:`attnspec.native`) for calls it takes (no ``mask``/``bias``/``softcap``/
        ``window``/``q_lengths``/dropout/``lse``/``weights``, a dtype and alignment the
        kernel gets right), with the spec's results for finite inputs, or a ``ValueError``
        saying why not. ``"auto"``: a kernel only when it is ``exact`` (NaN/inf too) and not
        measured slower, else the portable path. :func:`attnspec.native_plan` tells which.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    out or tuple
        ``out`` of shape ``(*batch, Hq, Lq, Dv)`` and the input dtype; ``(out, lse)``,
        ``(out, weights)`` or ``(out, lse, weights)`` as requested. A row with nothing to
        attend gives out 0, lse ``-inf`` and weights 0, never NaN.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> import attnspec
    >>> q = xp.zeros((1, 2, 4))          # one head, two queries, Dk = 4
    >>> k = xp.ones((1, 3, 4))
    >>> v = xp.reshape(xp.arange(6.0), (1, 3, 2))
    >>> attnspec.scaled_dot_product_attention(q, k, v, causal=True)
    Array([[[0., 1.],
            [1., 2.]]], dtype=array_api_strict.float64)
    >>> out, lse = attnspec.scaled_dot_product_attention(
    ...     q, k, v, mask=xp.asarray([[False] * 3, [True] * 3]), return_lse=True)
    >>> out
    Array([[[0., 0.],
            [2., 3.]]], dtype=array_api_strict.float64)
    >>> lse
    Array([[      -inf, 1.09861229]], dtype=array_api_strict.float64)
    """
    cache_key = None
    # Type checks first: an array or odd object here goes to the checks, which say what
    # is wrong, instead of failing in an ``==`` here.
    if (type(implementation) is str and implementation in _IMPLEMENTATIONS
            and return_weights is False and type(dropout_p) is float and dropout_p == 0.0
            and _fast.unset(xp, mask, bias, softcap, sinks, alibi_slopes, q_positions,
                            kv_positions, q_segment_ids, kv_segment_ids, score_mod, mask_mod,
                            block_table, kv_lengths, q_lengths, dropout_mask, window)):
        cache_key = _fast.key_of(query, key, value, (causal, alignment, scale, return_lse,
                                                     chunk_size, implementation))
        plan = _fast.lookup(cache_key)
        if plan is not None:  # this combination passed every check before (attnspec._fast)
            if plan.kernel is not None:
                return plan.kernel(_fast.native_call_of(plan, query, key, value))
            results = direct(_fast.problem_of(plan, query, key, value), plan.cols)
            return results[0] if len(results) == 1 else tuple(results)
    arguments = {name: value for name, value in locals().items() if name in _PARAMETERS}
    call = call_check.attention_call(arguments)
    if call.implementation != "portable":
        kernel, reason, native_call = _native.plan(call)
        if kernel is not None:
            host = not _large_blocks(call.key)
            k, v, keys = real_cache(call, host and read_ok(call.key, call.value,
                                                            call.kv_lengths),
                                     whole=False, kernel=True)
            _fast.remember_native(cache_key, kernel, native_call)
            return kernel(native_call._replace(key=k, value=v,
                                               shape=call.shape._replace(lk=keys)))
        if call.implementation == "native":
            raise ValueError(f"implementation='native': no native kernel takes this call "
                             f"({reason}); implementation='auto' falls back to the portable "
                             "path")
    results = _portable(call, cache_key)
    return results[0] if len(results) == 1 else tuple(results)


def _portable(call: call_check.AttentionCall,
              cache_key: tuple[Any, ...] | None = None) -> list[Array]:
    """attnspec's own path: the direct or the chunked one, as ``chunk_size`` and the shapes
    pick (:func:`choose_blocks`). ``cache_key``: a plain call's, under which a direct-path
    problem is kept for the next calls (:mod:`attnspec._fast`)."""
    xp, shape, query = call.xp, call.shape, call.query
    acc = accumulation_dtype(xp, query.dtype)
    scale = default_scale(shape.dk) if call.scale is None else call.scale
    # Scaling q (Lq x D) instead of the scores (Lq x Lk) saves a pass over every score, but
    # only a scale <= 1 does it safely: a larger one can overflow q where (q.k) * scale is
    # finite. The product is a new array, so the caller's query is never touched.
    fold = isinstance(scale, (int, float)) and scale <= 1.0
    q = to_dtype(xp, query, acc)
    q = q * scale if fold else q
    large = _large_blocks(q)
    # Not on accelerators (reading the lengths is a device sync per call) nor under a tracer.
    readable = not large and read_ok(q, call.key, call.value, call.kv_lengths,
                                     call.q_lengths)
    k, v, keys = real_cache(call, readable, whole=call.return_weights, dtype=acc)
    tokens = resolve_tokens(
        {n: getattr(call, n) for n in call_check.TOKEN_OPTIONS}, shape.lq, shape.lk,
        call.alignment, xp, call.device,
        positions_needed=call.causal or call.window is not None or call.alibi_slopes is not None,
    )
    if tokens is not None and tokens.kv_seg is not None:
        # Padding tokens' K/V rows are never read: zeroed like those past kv_lengths, so
        # that garbage there cannot reach a 0 * NaN (ATT-SEG-1, ATT-LEAK-2).
        seg = tokens.kv_seg[..., :keys]
        real = xp.reshape(seg >= 0, (*seg.shape[:-2], seg.shape[-1], 1))
        k, v = xp.where(real, k, 0.0), xp.where(real, v, 0.0)
    dropout_p = call.dropout_p
    problem = Problem(
        call=call, xp=xp, shape=shape, dtype=query.dtype, acc=acc, q=q, k=k, v=v,
        scale=None if fold else scale,
        bias=None if call.bias is None else to_dtype(xp, call.bias, acc),
        sinks=None if call.sinks is None else _per_head(call, call.sinks, acc),
        alibi=None if call.alibi_slopes is None else _per_head(call, call.alibi_slopes, acc),
        tokens=tokens,
        dropout_scale=1.0 / (1.0 - dropout_p) if dropout_p > 0.0 else 1.0, device=call.device,
    )
    segmented = tokens is not None and tokens.q_seg is not None and not large
    # A band whose diagonal the shapes fix, or (on arrays whose lengths can be read) one
    # that moves with kv_lengths/q_lengths: the chunked path cuts both (_chunked.py).
    per_batch = call.kv_lengths is not None or call.q_lengths is not None
    banded = (not large and (call.causal or call.window is not None) and (
        static_offset(shape.lq, shape.lk, call.alignment, per_batch, tokens) is not None
        or (per_batch and (tokens is None or not tokens.positioned) and readable)))
    threads = 1
    if (not large and call.score_mod is None and call.mask_mod is None
            and _parallel.eligible(q, xp)
            and shape.heads * shape.lq * keys * (shape.dk + shape.dv)
            >= _parallel.MIN_PARALLEL_WORK):
        threads = _parallel.threads()
    blocks = choose_blocks(shape._replace(lk=keys), call.chunk_size, call.return_weights,
                           large, segmented, banded, threads)
    if blocks is not None:
        return chunked(problem, *blocks)
    # The direct path reads only the keys some row may attend under the band (a decode
    # step with a sliding window over a long cache reads the window, not the cache).
    cols = (0, keys)
    limits = band_limits(call.causal, call.window)
    offsets = None if not readable or call.return_weights else band_offsets(
        shape.lq, shape.lk, limits, alignment=call.alignment, kv_lengths=call.kv_lengths,
        q_lengths=call.q_lengths, tokens=tokens, xp=xp, readable=True)
    if offsets is not None:
        cols = band_columns((0, shape.lq), cols, offsets, limits)
    _fast.remember(cache_key, problem, scale if fold else None, cols)
    return direct(problem, cols)


def _per_head(call: call_check.AttentionCall, x: Array, acc: Any) -> Array:
    """A per-head input (``sinks``, ``alibi_slopes``) broadcast to ``(*batch, Hq, 1, 1)`` in
    the accumulation dtype, next to each head's block of scores."""
    xp, shape = call.xp, call.shape
    x = xp.broadcast_to(to_dtype(xp, x, acc), (*shape.batch, shape.hq))
    return xp.reshape(x, (*shape.batch, shape.hq, 1, 1))


def native_plan(query: Array, key: Array, value: Array, /, **options: Any) -> Plan:
    """Which path ``scaled_dot_product_attention(query, key, value, **options,
    implementation="auto")`` takes, and why (pass ``implementation="native"`` to ask what
    ``"native"`` would run: it also takes kernels that ``"auto"`` passes over as slower).

    Returns
    -------
    Plan
        ``Plan(kernel, reason)``: ``kernel`` is the native kernel's name, or ``None`` for
        the portable path with ``reason`` saying why no kernel takes the call.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> import attnspec
    >>> q = xp.zeros((1, 2, 4))
    >>> attnspec.native_plan(q, q, q, causal=True).kernel is None
    True
    """
    options.setdefault("implementation", "auto")
    call_check.check_implementation(options["implementation"])
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise TypeError(f"native_plan() got unexpected keyword arguments: {unknown}")
    call = call_check.attention_call(bind(query, key, value, **options))
    kernel, reason, _ = _native.plan(call)
    return Plan(None if kernel is None else kernel.name, reason)


#: The public call's signature: :func:`native_plan` binds its options through it, so the
#: two take the same options with the same defaults.
_SIGNATURE = inspect.signature(scaled_dot_product_attention)
_OPTIONS = frozenset(name for name, parameter in _SIGNATURE.parameters.items()
                     if parameter.kind is inspect.Parameter.KEYWORD_ONLY)
_PARAMETERS = frozenset(_SIGNATURE.parameters)
_IMPLEMENTATIONS = frozenset(call_check.IMPLEMENTATIONS)


def bind(query: Array, key: Array, value: Array, /, **options: Any) -> dict[str, Any]:
    """Every argument of ``scaled_dot_product_attention(query, key, value, **options)`` by
    name, defaults filled in: what the public call sees as its ``locals()``."""
    bound = _SIGNATURE.bind(query, key, value, **options)
    bound.apply_defaults()
    return bound.arguments
