"""``onnxruntime.gqa``: ONNX Runtime's ``com.microsoft.GroupQueryAttention`` contrib operator
as a one-node model (built with ``onnx``) on the ``CPUExecutionProvider``.

Translation (measured with onnxruntime 1.32 on CPU against attnspec in float64; the graded
cases' worst error relative to max|out| is 2e-6 in float32 and 1.9e-3 in float16, which the
op accumulates in float32):

* layout: ``query (B, S, Hq*D)``, ``key``/``value (B, S, Hkv*D)``; no or several batch dims
  are flattened into one; GQA natively (contiguous groups, as the spec);
* ``causal`` -> ``causal=1`` (``0``: full attention). Query row ``s`` sits at key position
  ``T - S + s``, ``T = seqlens_k + 1``, with a cache (the spec's ``lower_right``), at ``s``
  without one (``Lq == Lk``: upper-left = lower-right);
* ``kv_lengths`` -> ``seqlens_k = T - 1``. Without a cache, rows past a ``T < S`` are
  documented "unspecified" but measured the spec's, NaN/inf past ``T`` kept out, for full
  and upper-left causal attention (S = 2 to 33): declared; with a window they are wrong;
* ``Lq < Lk`` (or lower-right ``kv_lengths``): the op takes as many new keys as queries, the
  rest as a cache: ``past_key = key[..., :T - Lq]``, new ``key[..., T - Lq:T]`` per entry,
  ``query_seqlens = Lq`` (else "batch_size must be 1 when sequence_length > 1 and past
  context is given"; it needs ``causal=1``: full attention with a cache and ``Lq > 1`` runs
  one entry per call). Without the ``present_*`` outputs a past gives a wrong output (error
  2.0). K/V past ``kv_lengths`` stay out;
* ``window=(left, 0)``, or ``(left, r >= 0)`` with ``causal`` -> ``local_window_size =
  left + 1``: the keys kept, the diagonal included (``1``: V's own row exactly; ``0``: 0);
* ``scale``, ``softcap`` (after the scale, before the bias, as the spec) attributes;
  ``bias`` -> ``attention_bias (B, Hq, Lq, T)`` (4-D only), where ``-inf`` masks; the op has
  no bool mask: ``mask`` -> ``-inf`` where it is False, added to the bias;
* ``sinks`` -> ``head_sink (Hq,)``, exactly ATT-SINK-1; it is 1-D only ("head_sink must be a
  1D tensor"), so sinks that differ between batch entries run one entry per call;
* ``weights`` <- ``output_qk`` with ``qk_output=2`` (after the softmax, sinks included),
  ``(B, Hq, Lq, T)`` padded with zeros to ``Lk``.

Not applicable (what the op does not take), with the op's message:

* float64 (types float, float16, bfloat16; bfloat16: the numpy backend has none); a head dim
  that is not a multiple of 8 ("head_size must be a multiple of 8"); ``dv_ne_dk`` ("same
  hidden size as key"); ``empty_keys`` ("total_sequence_length must be positive");
* fewer keys than queries with a cache (``Lq > Lk``, ``Lq != Lk`` and ``kv_lengths < Lq``,
  lower-right): ``query_seqlens`` must be ``<= seqlens_k + 1``; ``kv_lengths = 0``
  ("seqlens_k[0] = -1 is out of range");
* upper-left alignment with ``Lq != Lk``; windows not ending at the diagonal;
  ``q_lengths``, ``dropout``, ``alibi``, ``lse``: no such inputs / outputs.

Deviations (graded, expected to fail; pinned in ``tests/test_conformance_ort_gqa.py``):

* ATT-EMPTY-1: a row the mask or a ``-inf`` bias leaves with no key gives NaN (out and
  weights), not 0 (with a sink it gives 0, as the spec);
* ATT-LEAK-1: NaN in a value row that the mask, the causal mask or the window excludes
  reaches every output row (0 * NaN in ``P @ V``); a NaN key row behind the mask reaches the
  rows the causal mask lets see it (NaN + -inf), not the others;
* ATT-ARG-1: invalid shapes and mixed dtypes raise ONNX Runtime's ``InvalidArgument``, not
  ``TypeError``/``ValueError``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..cases import Case
from ..deviations import Deviation
from ._native import NativeAdapter

__all__ = ["OnnxruntimeGqaAdapter"]

#: The operator's inputs in order (an empty name skips an optional one).
_INPUTS = ("query", "key", "value", "past_key", "past_value", "seqlens_k",
           "total_sequence_length", "cos_cache", "sin_cache", "position_ids",
           "attention_bias", "head_sink", "k_scale", "v_scale", "q_norm_weight",
           "k_norm_weight", "query_seqlens")
_OUTPUTS = ("output", "present_key", "present_value", "output_qk")


def _plan(p: Any) -> tuple[bool, int] | str:
    """``(causal, local_window_size)`` for the op, or why the case is outside it."""
    causal, window = bool(p.get("causal")), p.get("window")
    left, right = window if window is not None else (None, None)
    if right is not None and (right < 0 or (not causal and right != 0)):
        return "the op's window ends at the diagonal: window=(left, 0), or causal"
    causal = causal or right == 0
    lq, lk = p["lq"], p["lk"]
    if p["dk"] % 8:
        return "the CPU kernel takes head dims that are multiples of 8"
    lengths = p.get("kv_lengths") or (lk,)
    if max(lengths) > lk:
        return "kv_lengths beyond the key length"
    if min(lengths) < 1:
        return "the op refuses a kv length of 0 (seqlens_k = -1 is out of range)"
    lower_right = p.get("alignment") == "lower_right"
    if causal and not lower_right and lq != lk:
        return "the op aligns its causal diagonal bottom-right (Lq != Lk here)"
    if min(lengths) < lq and (lq != lk or window is not None or (causal and lower_right)):
        return ("fewer keys than queries: the op needs seqlens_k + 1 >= S with a cache; "
                "without one, rows past it are unspecified (and wrong with a window)")
    return causal, -1 if left is None else int(left) + 1


def _masked_empty(case: Case) -> bool:
    """Rows emptied by the mask or a -inf bias, without a sink to keep them finite."""
    return bool(case.features & {"mask", "bias_neg_inf"}) and "sinks" not in case.features


class OnnxruntimeGqaAdapter(NativeAdapter):
    name = "onnxruntime.gqa"
    description = "com.microsoft.GroupQueryAttention on onnxruntime's CPUExecutionProvider"
    backends = ("numpy",)
    distributions = ("onnxruntime", "onnx")
    requires = (("onnxruntime", "onnxruntime"), ("onnx", "onnx (needed to build the model)"))
    ops = frozenset({"attention"})
    supported_dtypes = ("float32", "float16")
    features = frozenset({
        "batch0", "batch2", "gqa", "lq_ne_lk", "scale", "softcap", "mask", "bias", "bias_neg_inf",
        "causal", "causal_lower_right", "window", "kv_lengths", "sinks", "weights",
    })
    deviations = (
        Deviation("a row that the mask or a -inf bias leaves no key gives NaN (out and "
                  "weights), not 0; with a sink it gives 0", frozenset({"empty_rows"}),
                  fingerprint="fully_masked_row=nan", when=_masked_empty,
                  condition="the mask or a -inf bias empties the row, no sinks"),
        Deviation("NaN in a value row that the mask, the causal mask or the window excludes "
                  "reaches every output row (0 * NaN in P @ V); a NaN key row behind the "
                  "mask reaches the rows the causal mask lets see it",
                  frozenset({"poison_scores"}), fingerprint="masked_value_leak=nan"),
        Deviation("invalid shapes and mixed dtypes raise ONNX Runtime's InvalidArgument, "
                  "not TypeError or ValueError", frozenset({"arg_errors"})),
    )

    def __init__(self, backend_name: str | None = None) -> None:
        super().__init__(backend_name)
        self._sessions: dict[tuple[Any, ...], Any] = {}

    def _probe_kernel(self) -> str | None:
        """A build without the contrib operators (a minimal build) says so here."""
        x = np.zeros((1, 1, 2, 8), np.float32)
        try:
            self._attend({"query": x, "key": x, "value": x, "causal": True})
        except Exception as exc:
            version = self.versions().get("onnxruntime", "?")
            return (f"onnxruntime {version}: cannot run com.microsoft.GroupQueryAttention on "
                    f"CPU ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
        return None

    def not_applicable(self, case: Case) -> str | None:
        reason = super().not_applicable(case)
        if reason is not None or case.op != "attention":
            return reason
        plan = _plan(case.params)
        return plan if isinstance(plan, str) else None

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        return self._attend(args)

    def _attend(self, args: dict[str, Any]) -> dict[str, Any]:
        for name in ("q_lengths", "dropout_mask", "alibi_slopes", "block_table"):
            if args.get(name) is not None:
                raise ValueError(f"GroupQueryAttention has no {name}")
        q, k, v = args["query"], args["key"], args["value"]
        batch = q.shape[:-3]
        (hq, lq, d), (hkv, lk) = q.shape[-3:], k.shape[-3:-1]
        n = math.prod(batch)
        params = {"lq": lq, "lk": lk, "dk": d, **{name: args.get(name) for name in (
            "causal", "window", "alignment")}}
        if args.get("kv_lengths") is not None:
            params["kv_lengths"] = tuple(np.broadcast_to(args["kv_lengths"], batch).ravel())
        plan = _plan(params)
        if isinstance(plan, str):
            raise ValueError(plan)
        causal, window = plan

        def flat(x: Any, tail: tuple[int, ...]) -> np.ndarray:
            y: np.ndarray = np.broadcast_to(x, (*batch, *tail)).reshape(n, *tail)
            return y

        qf, kf, vf = flat(q, q.shape[-3:]), flat(k, k.shape[-3:]), flat(v, v.shape[-3:])
        lengths = np.asarray(params.get("kv_lengths") or (lk,) * n, np.int64)
        bias, mask = args.get("bias"), args.get("mask")
        if mask is not None:  # the op has no bool mask: -inf where it is False
            bias = np.where(mask, 0 if bias is None else bias, -np.inf).astype(q.dtype)
        bias = None if bias is None else flat(bias, (hq, lq, lk))
        sinks = None if args.get("sinks") is None else flat(args["sinks"], (hq,))
        attrs: dict[str, Any] = {"num_heads": hq, "kv_num_heads": hkv, "qk_output": 2,
                                 "causal": int(causal), **{name: float(args[name]) for name in (
                                     "scale", "softcap") if args.get(name) is not None}}
        if window >= 0:
            attrs["local_window_size"] = window
        cached = lq != lk  # else the op's prompt shape: no cache, row s at position s
        # query_seqlens (batched chunks with a cache) needs causal=1; head_sink is (Hq,).
        split = (cached and not causal and lq > 1) or (
            sinks is not None and bool((sinks != sinks[:1]).any()))
        parts = [slice(b, b + 1) for b in range(n)] if split else [slice(0, n)]
        outs, weights = [], []
        for rows in parts:
            feeds = _feeds(qf[rows], kf[rows], vf[rows], lengths[rows], cached, causal,
                           None if bias is None else bias[rows],
                           None if sinks is None else sinks[rows][0])
            key = (str(q.dtype), tuple(sorted(feeds)), tuple(sorted(attrs.items())))
            out, _, _, w = self._session(key)(feeds)
            outs.append(out)
            weights.append(np.pad(w, ((0, 0),) * 3 + ((0, lk - w.shape[-1]),)))
        out = np.concatenate(outs).reshape(n, lq, hq, -1).transpose(0, 2, 1, 3)
        return {"out": out.reshape(*batch, hq, lq, out.shape[-1]),
                "weights": np.concatenate(weights).reshape(*batch, hq, lq, lk)}

    def _session(self, key: tuple[Any, ...]) -> Any:
        run = self._sessions.get(key)
        if run is None:
            run = self._sessions[key] = _build(*key)
        return run


def _feeds(q: np.ndarray, k: np.ndarray, v: np.ndarray, lengths: np.ndarray, cached: bool,
           causal: bool, bias: np.ndarray | None, sink: np.ndarray | None
           ) -> dict[str, np.ndarray]:
    """The op's inputs for ``q (B, Hq, Lq, D)``, ``k``/``v (B, Hkv, Lk, D)``: keys
    ``[T - Lq, T)`` of each entry are the new chunk, those before it the cache."""
    n, lq = q.shape[0], q.shape[2]
    total = max(int(lengths.max()), lq)  # the op needs it >= S, also for short lengths

    def tokens(x: np.ndarray) -> np.ndarray:  # (B, H, L, D) -> (B, L, H*D)
        return np.ascontiguousarray(x.transpose(0, 2, 1, 3).reshape(n, x.shape[2], -1))

    past = lengths - lq if cached else np.zeros_like(lengths)
    feeds = {"query": tokens(q),
             "seqlens_k": (lengths - 1).astype(np.int32),
             "total_sequence_length": np.array([total], np.int32)}
    for name, x in (("key", k), ("value", v)):
        chunk = np.stack([x[b, :, p:p + lq] for b, p in enumerate(past)])
        feeds[name] = tokens(chunk)
        if cached:
            feeds[f"past_{name}"] = np.ascontiguousarray(x[:, :, :int(past.max())])
    if cached and causal:
        feeds["query_seqlens"] = np.full(n, lq, np.int32)
    if bias is not None:
        feeds["attention_bias"] = np.ascontiguousarray(bias[..., :total])
    if sink is not None:
        feeds["head_sink"] = np.ascontiguousarray(sink)
    return feeds


def _build(dtype: str, names: tuple[str, ...], attrs: tuple[tuple[str, Any], ...]) -> Any:
    """A callable ``feeds -> [output, present_key, present_value, output_qk]``."""
    import onnx
    import onnxruntime  # type: ignore[import-untyped]  # ships neither stubs nor py.typed
    from onnx import TensorProto, helper

    elem = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}[dtype]
    ints = ("seqlens_k", "total_sequence_length", "query_seqlens")
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT32 if name in ints else elem,
                                            None) for name in names]
    wired = [name if name in names else "" for name in _INPUTS]
    while not wired[-1]:
        wired.pop()
    outputs = [helper.make_tensor_value_info(name, elem, None) for name in _OUTPUTS]
    node = helper.make_node("GroupQueryAttention", wired, list(_OUTPUTS),
                            domain="com.microsoft", **dict(attrs))
    graph = helper.make_graph([node], "gqa", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION, 10)
    onnxruntime.set_default_logger_severity(4)  # errors are raised; do not print them too
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)
