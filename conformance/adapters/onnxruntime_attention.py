"""``onnxruntime.attention``: the ONNX ``Attention`` operator run by ONNX Runtime on CPU.

A one-node model is built with the ``onnx`` package (opset 23; opset 24 when the
``nonpad_kv_seqlen`` input is needed) and run on the ``CPUExecutionProvider``; sessions are
cached per graph signature, since the graph has no static shapes.

Translation (measured with onnx 1.23 and onnxruntime 1.32 on CPU):

* layout: ``Q``, ``K``, ``V`` are 4-D ``(B, H, L, D)`` like the spec; no or several batch
  dims are flattened into one and restored;
* ``mask`` -> bool ``attn_mask`` (True = attend, the spec's polarity); ``bias`` -> float
  ``attn_mask`` of the input dtype; both -> the bias with ``-inf`` where the mask is False
  (the op takes one ``attn_mask``);
* GQA: 4-D inputs with fewer K/V heads (query head h reads kv head h // (Hq // Hkv));
* ``scale`` and ``softcap`` attributes (the op applies softcap after scaling and before the
  mask, as the spec does);
* ``causal`` (upper-left) -> ``is_causal=1``: without a cache the op's offset is 0;
* ``kv_lengths`` -> ``nonpad_kv_seqlen`` (opset 24);
* lower-right causal -> ``is_causal=1`` with ``nonpad_kv_seqlen`` (``kv_lengths``, or ``Lk``
  for every batch entry): the op then anchors the diagonal at ``nonpad_kv_seqlen - Lq``,
  exactly ATT-CAUSAL-2; upper-left causal together with ``kv_lengths`` is given as an
  explicit triangle in ``attn_mask`` instead;
* ``weights`` from the ``qk_matmul_output`` output with ``qk_matmul_output_mode=3`` (the
  softmax output; the op has no dropout, so it is the matrix multiplying V).

Not declared (inputs and outputs the operator does not take), with the reason:

* bfloat16: the numpy backend has none;
* ``empty_keys``: ``Lk = 0`` fails (``kv_sequence_length > 0``);
* ``window``, ``q_lengths``, ``dropout``, ``lse``: no such inputs / outputs.

Deviations (graded, and expected to fail: ``deviations`` below, shown as ``x``):

* float64 with an explicit ``scale`` or a head dim other than 1, 16 and 256: a float32-sized
  error (~5e-8; measured for D = 1 to 256). The scale is a float32 attribute, and its square
  root scales Q and K each: exact only where ``D ** -0.25`` is a power of two;
* ATT-LEAK-1: NaN in a key row that the mask (or a ``-inf`` bias) excludes makes every
  output row NaN (fingerprint ``masked_value_leak=nan``);
* ATT-LEAK-2: NaN/inf in K/V rows past ``nonpad_kv_seqlen`` reach the output (fingerprint
  ``kv_padding_leak=nan``);
* ATT-ARG-1: invalid shapes and mixed dtypes raise ONNX Runtime's own exceptions
  (``Fail``, ``InvalidArgument``), not ``TypeError``/``ValueError``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..cases import Case
from ..deviations import Deviation
from ._native import NativeAdapter

__all__ = ["OnnxruntimeAttentionAdapter"]

_OPSET = 23
_OPSET_NONPAD = 24  # nonpad_kv_seqlen (external KV cache) arrived in opset 24


def _float64_inexact(case: Case) -> bool:
    """Where ONNX Runtime's float64 attention carries a float32-sized error (measured with
    onnxruntime 1.32 on CPU, head dims 1 to 256). It is exact exactly where ``D ** -0.25`` is
    a power of two (D = 1, 16, 256): the scale is a float32 attribute, and its square root
    scales Q and K each. An explicit scale is inexact the same way. One dominant logit makes
    the weights 0 and 1 to float64 precision, where the scale's rounding does not show."""
    if case.params.get("logits") == "one_dominant":
        return False
    dk = int(case.params.get("dk", 16))
    fourth_root = round(dk ** 0.25)
    exact = fourth_root ** 4 == dk and fourth_root & (fourth_root - 1) == 0
    return case.params.get("scale") is not None or not exact


class OnnxruntimeAttentionAdapter(NativeAdapter):
    name = "onnxruntime.attention"
    description = "ONNX Attention (opset 23/24) on onnxruntime's CPUExecutionProvider"
    backends = ("numpy",)
    distributions = ("onnxruntime", "onnx")
    requires = (("onnxruntime", "onnxruntime"), ("onnx", "onnx (needed to build the model)"))
    ops = frozenset({"attention"})
    supported_dtypes = ("float64", "float32", "float16")
    features = frozenset({
        "batch0", "batch2", "gqa", "dv_ne_dk", "lq_ne_lk", "scale", "softcap", "mask",
        "bias", "bias_neg_inf", "causal", "causal_lower_right", "kv_lengths", "weights",
    })
    deviations = (
        Deviation("float64 outputs carry a float32-sized error (~5e-8): the scale is a "
                  "float32 attribute and its square root scales Q and K each, exact only "
                  "where D ** -0.25 is a power of two", dtypes=("float64",),
                  when=_float64_inexact,
                  condition="an explicit scale, or D not 1, 16 or 256"),
        Deviation("a NaN/inf key at a masked position makes every output row NaN",
                  frozenset({"poison_scores"}), fingerprint="masked_value_leak=nan"),
        Deviation("NaN/inf in K/V rows past nonpad_kv_seqlen reach the output",
                  frozenset({"poison_kv"}), fingerprint="kv_padding_leak=nan"),
        Deviation("invalid shapes and mixed dtypes raise ONNX Runtime's own exceptions "
                  "(Fail, InvalidArgument), not TypeError or ValueError",
                  frozenset({"arg_errors"})),
    )

    def __init__(self, backend_name: str | None = None) -> None:
        super().__init__(backend_name)
        self._sessions: dict[tuple[Any, ...], Any] = {}

    def _probe_kernel(self) -> str | None:
        """Run a tiny model: an ONNX Runtime without a CPU Attention kernel says so here."""
        x = np.zeros((1, 1, 2, 4), np.float32)
        try:
            self._session(("float32", None, False, ()))({"Q": x, "K": x, "V": x})
        except Exception as exc:
            version = self.versions().get("onnxruntime", "?")
            return (f"onnxruntime {version}: cannot run ONNX Attention (opset {_OPSET}) on "
                    f"CPU ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
        return None

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        q, k, v = args["query"], args["key"], args["value"]
        batch = q.shape[:-3]
        hq, lq, lk = q.shape[-3], q.shape[-2], k.shape[-2]
        n = math.prod(batch)

        def flat(x: Any, tail: tuple[int, ...]) -> np.ndarray:
            # One batch dim, as the op requires (no or several are flattened).
            return np.ascontiguousarray(np.broadcast_to(x, (*batch, *tail)).reshape(n, *tail))

        feeds = {"Q": flat(q, q.shape[-3:]), "K": flat(k, k.shape[-3:]),
                 "V": flat(v, v.shape[-3:])}
        attrs: dict[str, Any] = {}
        for name in ("window", "q_lengths", "dropout_mask"):
            if args.get(name) is not None:
                raise ValueError(f"the ONNX Attention op has no {name}")
        if args.get("scale") is not None:
            attrs["scale"] = float(args["scale"])
        if args.get("softcap") is not None:
            attrs["softcap"] = float(args["softcap"])

        mask, bias = args.get("mask"), args.get("bias")
        kv_lengths = args.get("kv_lengths")
        lower_right = args.get("alignment", "upper_left") == "lower_right"
        if args.get("causal"):
            if lower_right or kv_lengths is None:
                # Offset 0 without nonpad_kv_seqlen (upper-left); nonpad - Lq with it.
                attrs["is_causal"] = 1
                if lower_right and kv_lengths is None:
                    kv_lengths = np.full(batch, lk, dtype=np.int64)
            else:
                tri = np.tri(lq, lk, dtype=bool)  # upper-left, independent of kv_lengths
                mask = tri if mask is None else mask & tri
        if bias is not None:
            attn_mask = bias if mask is None else np.where(mask, bias, -np.inf).astype(q.dtype)
            feeds["M"] = flat(attn_mask, (hq, lq, lk))
        elif mask is not None:
            feeds["M"] = flat(mask, (hq, lq, lk))
        if kv_lengths is not None:
            feeds["L"] = np.asarray(kv_lengths, np.int64).reshape(n)
        attrs["qk_matmul_output_mode"] = 3  # the softmax output: the weights
        key = (str(q.dtype), str(feeds["M"].dtype) if "M" in feeds else None, "L" in feeds,
               tuple(sorted(attrs.items())))
        out, weights = self._session(key)(feeds)
        return {"out": out.reshape(*batch, hq, lq, v.shape[-1]),
                "weights": weights.reshape(*batch, hq, lq, lk)}

    # -- model building -------------------------------------------------------------------

    def _session(self, key: tuple[Any, ...]) -> Any:
        run = self._sessions.get(key)
        if run is None:
            run = self._sessions[key] = _build(*key)
        return run


def _build(dtype: str, mask_dtype: str | None, nonpad: bool,
           attrs: tuple[tuple[str, Any], ...]) -> Any:
    """A callable ``feeds -> [Y, qk_matmul_output]`` for one graph signature."""
    import onnx
    import onnxruntime  # type: ignore[import-untyped]  # ships neither stubs nor py.typed
    from onnx import TensorProto, helper

    types = {"float64": TensorProto.DOUBLE, "float32": TensorProto.FLOAT,
             "float16": TensorProto.FLOAT16, "bool": TensorProto.BOOL}
    elem = types[dtype]
    inputs = [helper.make_tensor_value_info(name, elem, None) for name in ("Q", "K", "V")]
    names = ["Q", "K", "V"]
    if mask_dtype is not None:
        inputs.append(helper.make_tensor_value_info("M", types[mask_dtype], None))
    if mask_dtype is not None or nonpad:
        names.append("M" if mask_dtype is not None else "")
    if nonpad:
        # past_key, past_value unused (an empty name skips an optional input)
        names += ["", "", "L"]
        inputs.append(helper.make_tensor_value_info("L", TensorProto.INT64, None))
    outputs = [helper.make_tensor_value_info(name, elem, None) for name in ("Y", "W")]
    out_names = ["Y", "", "", "W"]  # present_key, present_value skipped
    node = helper.make_node("Attention", names, out_names, **dict(attrs))
    graph = helper.make_graph([node], "attention", inputs, outputs)
    opset = _OPSET_NONPAD if nonpad else _OPSET
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION, 10)
    # Kernel errors are raised as exceptions; do not also print them to stderr.
    onnxruntime.set_default_logger_severity(4)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)
