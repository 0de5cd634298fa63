"""``tinygrad.sdpa``: tinygrad's ``Tensor.scaled_dot_product_attention`` on its CPU device.

The adapter runs on the ``numpy`` backend: the case's arrays become ``Tensor(x,
device="CPU")`` in their own dtype and the output comes back with ``.numpy()``.

The device (measured with tinygrad 0.14 on Linux x86-64): tinygrad's ``CPU`` device
compiles four queue programs of its own with ``$CC`` (default ``clang``) whatever renders
the kernels, and its default kernel renderer is clang too. ``DEV=CPU:X86`` renders kernels
with tinygrad's own x86-64 code generator, which needs no compiler, so on x86-64 the adapter
runs the kernels there (the same code wherever it runs); where there is no ``clang`` it gives
tinygrad gcc through ``$CC`` (gcc takes neither clang's ``--target`` nor ``-o -``: a
three-line shim drops the one and copies the object to stdout). Without clang or gcc the
adapter is unavailable (``DEV=PYTHON``, tinygrad's emulator, needs none, but took 2.5 s for
one (2, 4, 9, 16) call: hours for the catalog's 1025-key cases). Every new shape and mask
form is a new kernel: the catalog's 120 cases took 54 s on a busy 2-core CPU.

Translation:

* layout: ``(..., H, L, D)`` like the spec, any number of batch dims (matmul broadcasting);
* ``mask`` -> a bool ``attn_mask`` (True = attend: tinygrad turns it into ``0``/``-inf``);
  ``bias`` -> a float ``attn_mask`` (added); both -> the bias with ``-inf`` where the mask is
  False (one ``attn_mask``);
* ``causal`` (upper-left: ``tril``) -> ``is_causal=True``, or ANDed into ``attn_mask`` when
  there is one (tinygrad refuses ``is_causal`` with ``attn_mask``);
* GQA -> ``enable_gqa=True`` (``repeat_interleave``: query head h reads kv head
  h // (Hq // Hkv)).

Not declared (inputs and outputs the method does not take): bfloat16 (the numpy backend
cannot carry it), ``scale`` (the method always divides by ``sqrt(D)``), lower-right causal,
``softcap``, ``window``, lengths, ``dropout`` (a probability, no keep-mask), ``sinks``,
``lse``, ``weights``; ``backward`` (tinygrad differentiates, but the numpy backend has no
autodiff and the adapter none of its own).

Deviations (graded, and expected to fail), measured:

* ATT-EMPTY-1: a row with nothing to attend is NaN (softmax of a row of ``-inf``);
* ATT-LEAK-1: a NaN key at a masked position makes its rows NaN (``NaN + -inf``);
* ATT-ARG-1: mixed q/k/v dtypes are promoted without an error; a head-dim mismatch raises
  ``RuntimeError`` ("cannot dot"), heads that do not divide ``IndexError``.
"""

from __future__ import annotations

import atexit
import os
import platform
import shutil
import sys
import tempfile
from typing import Any

import numpy as np

from ..cases import Case
from ..deviations import Deviation
from ._native import NativeAdapter

__all__ = ["TinygradSdpaAdapter"]

_DEVICE = "CPU"
#: gcc as tinygrad's $CC: no --target, and the object file copied to stdout for ``-o -``.
_SHIM = """#!{python}
import os, subprocess, sys, tempfile
args = [a for a in sys.argv[1:] if not a.startswith("--target=")]
i = args.index("-o"); out = args[i + 1]; del args[i:i + 2]
with tempfile.TemporaryDirectory() as tmp:
    subprocess.run(["gcc", *args, "-o", os.path.join(tmp, "o")], check=True)
    data = open(os.path.join(tmp, "o"), "rb").read()
(sys.stdout.buffer.write(data) if out == "-" else open(out, "wb").write(data))
"""


def _compiler() -> str | None:
    """Make sure tinygrad finds a C compiler for its CPU device's queue programs; the reason
    why not (``None`` when it does)."""
    if os.environ.get("CC") or shutil.which("clang"):
        return None
    if not shutil.which("gcc"):
        return ("tinygrad's CPU device compiles its queue programs with clang ($CC): "
                "neither clang nor gcc found")
    folder = tempfile.mkdtemp(prefix="attnspec-tinygrad-cc-")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, "cc")
    with open(path, "w") as f:
        f.write(_SHIM.format(python=sys.executable))
    os.chmod(path, 0o755)
    os.environ["CC"] = path  # read by tinygrad at its first compile
    return None


def _target() -> str:
    """``CPU:X86`` on x86-64 (tinygrad's own code generator), else tinygrad's default."""
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    return f"{_DEVICE}:X86" if x86 else _DEVICE


class TinygradSdpaAdapter(NativeAdapter):
    name = "tinygrad.sdpa"
    description = "tinygrad Tensor.scaled_dot_product_attention on tinygrad's CPU device"
    backends = ("numpy",)
    distributions = ("tinygrad",)
    requires = (("tinygrad", "tinygrad"),)
    ops = frozenset({"attention"})
    supported_dtypes = ("float64", "float32", "float16")
    features = frozenset({
        "batch0", "batch2", "gqa", "dv_ne_dk", "lq_ne_lk", "empty_keys", "mask", "bias",
        "bias_neg_inf", "causal",
    })
    deviations = (
        Deviation("a row with nothing to attend is NaN: a bool mask becomes -inf added to "
                  "the scores, and the softmax of a row of -inf is NaN",
                  frozenset({"empty_rows"}), fingerprint="fully_masked_row=nan",
                  when=lambda case: int(case.params.get("lk", 1)) > 0, condition="Lk > 0"),
        Deviation("a NaN/inf key at a masked position makes its rows NaN (NaN + -inf)",
                  frozenset({"poison_scores"}), fingerprint="masked_value_leak=nan"),
        Deviation("mixed q/k/v dtypes are promoted, not refused; a head-dim mismatch raises "
                  "RuntimeError (cannot dot), heads that do not divide IndexError",
                  frozenset({"arg_errors"})),
    )

    def _probe_kernel(self) -> str | None:
        """Run a tiny attention: a device that cannot compile says so here."""
        reason = _compiler()
        if reason is not None:
            return reason
        x = np.zeros((1, 1, 2, 4), np.float32)
        try:
            _sdpa({"query": x, "key": x, "value": x})
        except Exception as exc:
            return (f"tinygrad: cannot run on {_target()} ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200] if str(exc) else ''})")
        self.description = (f"tinygrad Tensor.scaled_dot_product_attention on "
                            f"DEV={_target()}")
        return None

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        for name in ("scale", "softcap", "window", "kv_lengths", "q_lengths", "dropout_mask",
                     "sinks"):
            if args.get(name) is not None:
                raise ValueError(f"tinygrad's scaled_dot_product_attention has no {name}")
        return {"out": _sdpa(args)}


def _sdpa(args: dict[str, Any]) -> np.ndarray:
    from tinygrad.helpers import Context
    from tinygrad.tensor import Tensor

    q, k, v = args["query"], args["key"], args["value"]
    lq, lk = q.shape[-2], k.shape[-2]
    mask, bias = args.get("mask"), args.get("bias")
    is_causal = False
    if args.get("causal"):
        if args.get("alignment", "upper_left") != "upper_left":
            raise ValueError("tinygrad's is_causal is upper-left only")
        if mask is None and bias is None:
            is_causal = True
        else:  # tinygrad refuses is_causal together with attn_mask
            tri = np.tri(lq, lk, dtype=bool)
            mask = tri if mask is None else mask & tri
    attn_mask = mask
    if bias is not None:
        attn_mask = bias if mask is None else np.where(mask, bias, -np.inf).astype(bias.dtype)
    with Context(DEV=_target()):  # type: ignore[no-untyped-call]
        def tensor(x: np.ndarray) -> Any:
            return Tensor(np.ascontiguousarray(x), device=_DEVICE)

        out = tensor(q).scaled_dot_product_attention(
            tensor(k), tensor(v), None if attn_mask is None else tensor(attn_mask),
            is_causal=is_causal, enable_gqa=q.shape[-3] != k.shape[-3])
        result: np.ndarray = out.numpy()
        return result
