"""The ecosystem's attention functions: Keras 3 ``keras.ops.dot_product_attention`` on torch
and on JAX (``keras.torch``, ``keras.jax``) and flax's ``dot_product_attention`` (``flax.linen``,
``flax.nnx``), graded as a new user of each meets them.

Keras reads ``KERAS_BACKEND`` once per process, so every adapter is graded in a fresh Python
process of its own, as ``attnspec check``'s workers do (:func:`_grade` runs there and hands
back JSON): one case per catalog group, the cases pinned below, and option combinations the
catalog lacks. Asserted: no failure that no declared deviation covers and no pass that one
does, the groups the translation exists for ran, and the measured differences (each pin
fails when the library changes, so the declaration can follow).
"""

from __future__ import annotations

import builtins
import importlib.util
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attnspec.conformance.adapters import NATIVE, resolve
from attnspec.conformance.cases import Case, make_inputs
from attnspec.conformance.catalog import catalog, required_features
from attnspec.conformance.golden import golden, naive
from attnspec.conformance.tolerance import grade

NAMES = {"keras.torch": "keras", "keras.jax": "keras", "flax.linen": "flax", "flax.nnx": "flax"}

#: Catalog groups each adapter must run (what its translation exists for).
KEY_GROUPS = {
    "keras.torch": {"causal-upper-left", "gqa", "mask", "bias", "empty-rows", "shape", "dtype",
                    "poison-scores", "arg-errors", "grad", "nonfinite"},
    "keras.jax": {"causal-upper-left", "gqa", "mask", "bias", "empty-rows", "shape", "dtype",
                  "poison-scores", "arg-errors", "grad"},
    "flax.linen": {"mask", "bias", "empty-rows", "dtype", "poison-scores", "arg-errors", "grad",
                   "accumulate"},
    "flax.nnx": {"causal-upper-left", "gqa", "mask", "bias", "empty-rows", "shape", "dtype",
                 "poison-scores", "arg-errors", "grad"},
}

H4 = "b2.h4x4.q9.k9.d16"
#: Measured outcomes of catalog cases: a substring of the failure (``None``: the case passes).
PINS: dict[str, dict[str, str | None]] = {
    "keras.torch": {
        f"dtype/{H4}/float64": "out: dtype float32, expected float64",
        f"empty-rows/{H4}.mask=empty_rows/float32": "out: max error",  # mean of V
        f"empty-rows/{H4}.bias=row_neg_inf/float32": None,  # torch gives 0 for -inf rows
        f"poison-scores/{H4}.mask=key_columns.poison=scores/float32": "non-finite",
        f"poison-scores/{H4}.bias=key_columns.poison=scores/float32": "non-finite",
        f"dtype-errors/{H4}.error=mixed_dtypes/float32": "did not raise TypeError",
        f"arg-errors/{H4}.error=head_dim_mismatch/float32": "raised RuntimeError",
    },
    "keras.jax": {
        f"dtype/{H4}/float64": "out: dtype float32, expected float64",
        f"empty-rows/{H4}.mask=empty_rows/float32": "out: max error",
        f"empty-rows/{H4}.bias=row_neg_inf/float32": "non-finite",
        f"poison-scores/{H4}.mask=key_columns.poison=scores/float32": None,
        f"poison-scores/{H4}.bias=key_columns.poison=scores/float32": "non-finite",
        f"dtype-errors/{H4}.error=mixed_dtypes/float32": "did not raise TypeError",
        f"arg-errors/{H4}.error=head_dim_mismatch/float32": None,
        "arg-errors/b2.h4x2.q6.k9.d16.error=heads_not_divisible/float32": "raised TypeError",
    },
    "flax.linen": {
        f"dtype/{H4}/float64": None,  # float64 softmax in float64
        f"empty-rows/{H4}.mask=empty_rows/float32": "out: max error",
        f"empty-rows/{H4}.bias=row_neg_inf/float32": "non-finite",
        f"poison-scores/{H4}.mask=key_columns.poison=scores/float32": None,
        f"poison-scores/{H4}.bias=key_columns.poison=scores/float32": "non-finite",
        f"dtype-errors/{H4}.error=mixed_dtypes/float32": "did not raise TypeError",
        f"arg-errors/{H4}.error=head_dim_mismatch/float32": "raised AssertionError",
    },
    "flax.nnx": {
        f"dtype/{H4}/float64": "out: max error",  # a float32 softmax: checked below
        "single-key/b2.h4x2.q6.k9.d16.mask=single_key/float64": None,
        f"empty-rows/{H4}.mask=empty_rows/float32": "out: max error",
        f"empty-rows/{H4}.bias=row_neg_inf/float32": "non-finite",
        f"poison-scores/{H4}.mask=key_columns.poison=scores/float32": None,
        f"poison-scores/{H4}.bias=key_columns.poison=scores/float32": "non-finite",
        f"dtype-errors/{H4}.error=mixed_dtypes/float32": "did not raise TypeError",
        "arg-errors/b2.h4x2.q6.k9.d16.error=heads_not_divisible/float32": None,
    },
}

#: Why a feature is not declared: the call, made anyway, still fails so.
UNDECLARED: dict[str, dict[str, str]] = {
    "keras.torch": {"combination/bias=neg_inf.causal=True.mask=sparse/float32":
                    "ValueError: Only one of `bias` and `mask`"},
    "keras.jax": {f"shape/{H4}.v5/float32": "TypeError: cannot reshape array"},
    "flax.linen": {"gqa/b2.h8x2.q6.k9.d16/float32": "AssertionError"},
    "flax.nnx": {f"shape/{H4}.v5/float32": "ValueError: value shape should be"},
}

#: The fingerprint answers that say what each does where frameworks disagree.
FINGERPRINT = {
    "keras.torch": {"mask_polarity": "keep", "causal_alignment": "upper_left",
                    "fully_masked_row": "mean_v", "masked_value_leak": "nan",
                    "gqa_mapping": "contiguous"},
    "keras.jax": {"mask_polarity": "keep", "causal_alignment": "upper_left",
                  "fully_masked_row": "mean_v", "masked_value_leak": "none",
                  "gqa_mapping": "contiguous"},
    "flax.linen": {"mask_polarity": "keep", "fully_masked_row": "mean_v",
                   "masked_value_leak": "none", "low_precision_accumulation": "float32"},
    "flax.nnx": {"mask_polarity": "keep", "causal_alignment": "upper_left",
                 "fully_masked_row": "mean_v", "masked_value_leak": "none",
                 "gqa_mapping": "contiguous"},
}

#: Combinations the catalog does not hold. The "sparse" mask and the "neg_inf" bias keep key
#: 0, so no row is empty under an upper-left causal mask.
COMBINATIONS = [
    {"mask": "sparse", "causal": True},
    {"bias": "neg_inf", "causal": True},
    {"mask": "sparse", "bias": "neg_inf", "causal": True},
    {"hq": 4, "hkv": 4, "lq": 9, "lk": 6, "mask": "sparse", "causal": True},
    {"hq": 4, "hkv": 4, "batch": [2, 3], "mask": "sparse", "bias": "random"},
    {"hq": 4, "hkv": 4, "lk": 0},
]


def _combination(options: dict[str, Any]) -> Case:
    params = {"batch": [2], "hq": 4, "hkv": 2, "lq": 6, "lk": 9, "dk": 16, "dv": 16, **options}
    slug = ".".join(f"{k}={v}" for k, v in sorted(options.items()))
    return Case(id=f"combination/{slug}/float32", op="attention", rules=("ATT-MASK-1",),
                dtype="float32", params=params,
                features=required_features("attention", params, "float32"))


def _outcome(adapter: Any, case: Case) -> str | None:
    """``None`` when the adapter passes the case, else what went wrong."""
    inputs = make_inputs(case)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if case.expect != "value":
            try:
                adapter.run(case, inputs)
            except getattr(builtins, case.expect):
                return None
            except Exception as exc:
                return f"raised {type(exc).__name__} ({exc}), expected {case.expect}"
            return f"did not raise {case.expect}"
        try:
            result = adapter.run(case, inputs)
        except Exception as exc:
            return f"raised {type(exc).__name__}: {exc}"
    verdict = grade(case, result.outputs, result.dtypes, golden(case, inputs),
                    naive(case, inputs))
    return None if verdict.passed else verdict.message


def _grade(name: str) -> dict[str, Any]:
    """Grade adapter ``name`` in this process (a fresh one: see the module docstring)."""
    from attnspec.conformance.fingerprint import PROBES
    from attnspec.conformance.worker import enable_jax_x64

    adapter = resolve(name)
    reason = adapter.unavailable()
    if reason is not None:
        return {"unavailable": reason}
    enable_jax_x64(adapter)  # as attnspec check's workers: float64 runs in float64
    every = {c.id: c for c in [*catalog(), *map(_combination, COMBINATIONS)]}
    chosen: dict[str, Case] = {}
    for case in every.values():  # the first applicable case of every group
        group = case.id.split("/", 1)[0]
        if group not in chosen and adapter.not_applicable(case) is None:
            chosen[group] = case
    wanted = [*chosen.values(), *(every[i] for i in PINS[name])]
    wanted += [c for c in every.values() if c.id.startswith("combination/")]
    graded = {}
    for case in {c.id: c for c in wanted if adapter.not_applicable(c) is None}.values():
        deviation = next((d for d in adapter.deviations if d.matches(case)), None)
        graded[case.id] = {"message": _outcome(adapter, case),
                           "deviation": deviation and deviation.reason}
    undeclared = {}
    for case_id in UNDECLARED[name]:
        assert adapter.not_applicable(every[case_id]) is not None, case_id
        undeclared[case_id] = _outcome(adapter, every[case_id])
    result = {"graded": graded, "undeclared": undeclared, "versions": adapter.versions(),
              "fingerprint": {probe: PROBES[probe].observe(adapter.run, adapter)
                              for probe in FINGERPRINT[name]}}
    if name.startswith("keras."):  # keras is imported now, with this adapter's backend
        from attnspec.conformance.adapters.keras_dpa import keras_module

        other = "jax" if name == "keras.torch" else "torch"
        result["other"] = {"unavailable": resolve(f"keras.{other}").unavailable()}
        try:
            keras_module(other)
        except RuntimeError as exc:
            result["other"]["error"] = str(exc)
    return result


def _graded_in_a_fresh_process(name: str) -> dict[str, Any]:
    code = ("import json, sys\n"
            f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            f"from {Path(__file__).stem} import _grade\n"
            f"print('RESULT:' + json.dumps(_grade({name!r})))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT:")]
    assert done.returncode == 0, done.stderr[-3000:]
    assert lines, done.stdout[-3000:]
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT:"):])
    return result


@pytest.mark.parametrize("name", sorted(NAMES))
def test_graded_as_declared_with_measured_differences(name):
    if importlib.util.find_spec(NAMES[name]) is None:
        pytest.skip(f"{NAMES[name]}: not installed")
    assert name in NATIVE
    result = _graded_in_a_fresh_process(name)
    if "unavailable" in result:
        pytest.skip(result["unavailable"])
    graded = result["graded"]
    unexpected = [f"{case_id}: {r['message']}" if r["deviation"] is None
                  else f"{case_id}: passed, but declared as a deviation ({r['deviation']})"
                  for case_id, r in graded.items()
                  if (r["message"] is None) == (r["deviation"] is not None)]
    assert not unexpected, "\n".join(unexpected)
    groups = {case_id.split("/", 1)[0] for case_id in graded}
    assert not KEY_GROUPS[name] - groups
    assert any(c.startswith("combination/") for c in graded)
    # the measured differences
    for case_id, expected in PINS[name].items():
        message = graded[case_id]["message"]
        if expected is None:
            assert message is None, (case_id, message)
        else:
            assert expected in (message or "passed"), (case_id, message)
    for case_id, expected in UNDECLARED[name].items():
        message = result["undeclared"][case_id]
        assert expected in (message or "passed"), (case_id, message)
    assert result["fingerprint"] == FINGERPRINT[name]
    assert NAMES[name] in result["versions"]
    if name.startswith("keras."):  # the backend is fixed at import: the other one refuses
        imported = f"keras: already imported in this process with backend {name[6:]!r}"
        assert result["other"]["unavailable"].startswith(imported)
        assert result["other"]["error"].startswith(imported)
    if name == "flax.nnx":  # float64 in, a float32 softmax's error out
        found = re.search(r"max error ([0-9.e+-]+)", graded[f"dtype/{H4}/float64"]["message"])
        assert found is not None
        assert 1e-8 < float(found.group(1)) < 1e-5, found

