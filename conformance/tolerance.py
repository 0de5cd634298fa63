"""The tolerance rule: where a result counts as right.

flash-attention's test rule, made dtype-aware. For each output (``out``, ``lse``,
``weights``, and the gradients ``dq``, ``dk``, ``dv``, ``dbias`` of a gradient case) an
implementation passes when

    err(impl) <= k * err(naive) + c * eps(dtype) * max|golden| + g * eps64 * L * max|golden|

where ``err(x) = max |x - golden|`` over the entries where the golden is finite, ``naive`` is
the textbook computation in the case's dtype with every operation rounded to it
(``golden.naive``), and ``eps`` is the dtype's machine epsilon. ``k`` allows an
implementation to be somewhat less accurate than the naive one; ``c`` is the floor for cases
where the naive error happens to be tiny. The recorded ``ratio`` is
``err(impl) / max(err(naive), eps * max|golden|)``: ~1 means "as accurate as the naive
computation", < 1 more accurate.

The last term is the golden's own error. The golden is float64 arithmetic, and every score it
computes is rounded, by about ``eps64 * |s|``; that moves each weight by that relative
amount, and ``out`` by at most ``2 max|ds| max|v|``. ``L`` is the case's logit magnitude
(:func:`~.golden.logit_magnitude`: the largest finite ``|lse|``, which is within ``log Lk`` of
the largest attended score). In float32 and half precision the term is 2^-29 of the ``c``
floor and changes nothing; in float64 it is the precision of the problem itself: a correct
float64 kernel that sums a score's products in another order than the golden is ``~eps64 *
|s|`` off it, and the naive reference cannot measure that where its own order happens to
match the golden's (found by ``--explore`` on a correct kernel at logits ~600: error 3.3e-14
against a bound of 5.6e-15).

Beyond the bound, every output must have the expected shape and dtype (ATT-SHAPE-1,
ATT-DTYPE-1) and the same non-finite entries as the golden: NaN where it is NaN, the same
infinities (an empty row's lse is ``-inf``, not a large negative number).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .cases import Case
from .precision import EPS

#: The precision the golden is computed in (attnspec on NumPy float64).
GOLDEN_EPS = EPS["float64"]

__all__ = ["GOLDEN_EPS", "TOLERANCES", "Grade", "Tolerance", "expected_dtype", "grade"]


@dataclass(frozen=True)
class Tolerance:
    k: float  # allowed multiple of the naive same-dtype error
    c: float  # floor, in eps x max|golden|, for float64 and float32
    c_half: float  # the same floor for float16 and bfloat16
    #: Multiple of eps64 x L x max|golden|, the golden's own rounding of logits of magnitude
    #: L. Measured: correct float64 kernels (torch SDPA, attnspec on torch, examples/
    #: fixed_kernel.py) on 1600 random configurations at logit magnitude 10-1e4, D = 1-64,
    #: reached 0.46 of eps64 x L x max|golden| (tests/test_conformance_tolerance_logits.py
    #: holds a bound on that), so 2 leaves 4x.
    g: float = 2.0

    def floor(self, dtype: str) -> float:
        return self.c_half if dtype in ("float16", "bfloat16") else self.c


#: k = 2 is flash-attention's factor. The floor c: measured on the full catalog, the worst
#: correct implementation (torch SDPA, float64, head dim 256: its dot products carry
#: ~sqrt(D) eps) reached 3.9 eps x max|golden|, so c = 8 leaves a 2x margin. In half
#: precision the k x naive term dominates, and c_half = 4 keeps float16 accumulation over
#: 1025 keys caught (docs/conformance.md has the figures).
TOLERANCES: dict[str, Tolerance] = {
    "out": Tolerance(k=2.0, c=8.0, c_half=4.0),
    "lse": Tolerance(k=2.0, c=8.0, c_half=4.0),
    "weights": Tolerance(k=2.0, c=8.0, c_half=4.0),
    # Gradients (ATT-GRAD-2): the same rule, against the analytic backward in extended
    # precision and the naive backward in the case dtype (conformance/gradients.py).
    "dq": Tolerance(k=2.0, c=8.0, c_half=4.0),
    "dk": Tolerance(k=2.0, c=8.0, c_half=4.0),
    "dv": Tolerance(k=2.0, c=8.0, c_half=4.0),
    "dbias": Tolerance(k=2.0, c=8.0, c_half=4.0),
    "dsinks": Tolerance(k=2.0, c=8.0, c_half=4.0),
    "dalibi_slopes": Tolerance(k=2.0, c=8.0, c_half=4.0),
}

#: Outputs a gradient case must return besides ``out`` (``dbias``, ``dsinks`` and
#: ``dalibi_slopes`` are graded when returned).
GRADIENTS_REQUIRED = ("dq", "dk", "dv")


@dataclass
class Grade:
    passed: bool
    max_error: float  # worst err(impl) relative to max|golden| over the graded outputs
    tolerance: float  # the bound that err was held to (same scale)
    ratio: float  # worst err(impl) / err(naive)
    message: str
    #: Per graded output: ``{"error": ..., "tolerance": ..., "ratio": ...}`` (relative to
    #: max|golden|, like max_error), for the outputs graded before a failure stopped it.
    errors: dict[str, dict[str, float]] = field(default_factory=dict)


def expected_dtype(case: Case, output: str) -> str:
    """``lse`` is float32 for half-precision inputs (ATT-DTYPE-2); the rest keep the dtype."""
    if output == "lse" and case.dtype in ("float16", "bfloat16"):
        return "float32"
    return case.dtype


def _nonfinite_mismatch(name: str, got: np.ndarray, want: np.ndarray) -> str | None:
    bad = ~(np.isnan(got) == np.isnan(want))
    bad |= np.isinf(want) & (got != want)
    bad |= np.isfinite(want) & ~np.isfinite(got)
    if not bad.any():
        return None
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return (f"{name}{list(idx)}: expected {want[idx]!r}, got {got[idx]!r} "
            f"({int(bad.sum())} non-finite mismatches)")


def grade(
    case: Case,
    outputs: dict[str, np.ndarray],
    dtypes: dict[str, str],
    golden: dict[str, np.ndarray],
    naive: dict[str, np.ndarray],
    logits: float = 0.0,
) -> Grade:
    """Grade the outputs an implementation returned (at least ``out``; a gradient case also
    ``dq``, ``dk`` and ``dv``). ``logits`` is the case's logit magnitude ``L``
    (:func:`~.golden.logit_magnitude`; 0 leaves the golden's own error out)."""
    if "out" not in outputs:
        return Grade(False, np.inf, 0.0, np.inf, "no 'out' returned")
    worst = Grade(True, 0.0, 0.0, 0.0, "")
    errors: dict[str, dict[str, float]] = {}
    eps = EPS[case.dtype]
    for name, got in outputs.items():
        if name not in golden:
            continue
        want = golden[name]
        got = np.asarray(got, dtype=np.float64)
        if got.shape != want.shape:
            return Grade(False, np.inf, 0.0, np.inf,
                         f"{name}: wrong shape {got.shape}, expected {want.shape}", errors)
        if name in dtypes and dtypes[name] != expected_dtype(case, name):
            return Grade(False, np.inf, 0.0, np.inf,
                         f"{name}: dtype {dtypes[name]}, expected {expected_dtype(case, name)}",
                         errors)
        mismatch = _nonfinite_mismatch(name, got, want)
        if mismatch:
            return Grade(False, np.inf, 0.0, np.inf, mismatch, errors)
        finite = np.isfinite(want)
        if not finite.any():
            continue
        scale = float(np.max(np.abs(want[finite]))) or 1.0
        err = float(np.max(np.abs(got[finite] - want[finite])))
        ref = np.asarray(naive.get(name, want), dtype=np.float64)
        both = finite & np.isfinite(ref)
        err_naive = float(np.max(np.abs(ref[both] - want[both]))) if both.any() else 0.0
        tol = TOLERANCES[name]
        golden_error = tol.g * GOLDEN_EPS * logits * scale
        bound = tol.k * err_naive + tol.floor(case.dtype) * eps * scale + golden_error
        ratio = err / max(err_naive, eps * scale)
        errors[name] = {"error": err / scale, "tolerance": bound / scale, "ratio": ratio}
        if err > bound:
            return Grade(False, err / scale, bound / scale, ratio,
                         f"{name}: max error {err:.3g} > tolerance {bound:.3g} "
                         f"({tol.k:g} x naive {err_naive:.3g} + {tol.floor(case.dtype):g} eps x "
                         f"{scale:.3g}{_golden_term(tol, logits, golden_error, bound)}); "
                         f"ratio {ratio:.3g}", errors)
        if ratio >= worst.ratio:
            worst = Grade(True, err / scale, bound / scale, ratio, "")
    if case.backward:
        missing = [n for n in GRADIENTS_REQUIRED if n not in outputs]
        if missing:
            return Grade(False, np.inf, 0.0, np.inf,
                         f"no {', '.join(repr(n) for n in missing)} returned (a gradient case "
                         "grades dq, dk and dv)", errors)
    worst.errors = errors
    return worst


def _golden_term(tol: Tolerance, logits: float, golden_error: float, bound: float) -> str:
    """The golden-error term as the message shows it: only where it is part of the bound
    (float64 at large logits; below float64 it is ~1e-9 of the bound)."""
    if golden_error < 0.01 * bound:
        return ""
    return f" + {tol.g:g} eps64 x logits {logits:.3g} x max|golden| = {golden_error:.3g}"
