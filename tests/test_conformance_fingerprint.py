"""The fingerprint names each implementation's convention where frameworks differ.

attnspec and a defect-free re-implementation give the spec's answers; each broken
implementation of ``tests/broken_impls.py`` shows its defect (and only the deviations that
defect implies); torch SDPA and ``jax.nn.dot_product_attention`` show the differences
docs/spec.md lists (torch: NaN from a masked NaN key, ATT-LEAK-1; JAX: mean of V for a fully
masked row, ATT-EMPTY-1).
"""

from __future__ import annotations

from typing import Any

import pytest
from broken_impls import BROKEN, adapter

from attnspec.conformance.adapters import Adapter, resolve
from attnspec.conformance.adapters.attnspec_adapter import AttnspecAdapter
from attnspec.conformance.cases import Case
from attnspec.conformance.features import BEHAVIOURS
from attnspec.conformance.fingerprint import PROBES, SPEC_ANSWERS, fingerprint

ORDER = ["mask_polarity", "causal_alignment", "fully_masked_row", "low_precision_accumulation",
         "masked_value_leak", "kv_padding_leak", "softcap_order", "gqa_mapping",
         "segment_positions", "segment_padding_leak", "alibi_alignment"]


def deviations(answers: dict[str, str]) -> dict[str, str]:
    return {name: answer for name, answer in answers.items() if answer != SPEC_ANSWERS[name]}


def _available(adapter: Adapter) -> Adapter:
    if adapter.unavailable():
        pytest.skip(adapter.unavailable())
    return adapter


def test_probes_in_report_order_with_their_spec_answers():
    assert list(PROBES) == ORDER
    assert list(SPEC_ANSWERS) == ORDER
    for name, probe in PROBES.items():
        assert probe.name == name
        assert probe.spec in probe.answers


@pytest.mark.parametrize("backend", ["numpy", "torch-cpu"])
def test_attnspec_gives_the_spec_answers(backend):
    assert fingerprint(_available(AttnspecAdapter(backend))) == SPEC_ANSWERS


def test_reimplementation_without_defect_gives_the_spec_answers():
    assert fingerprint(adapter("correct")) == SPEC_ANSWERS


#: defect -> the answers that differ from the spec's
BROKEN_ANSWERS = {
    # Every probe that computes scores sees the wrong scale; an empty row has none.
    "wrong_scale": {name: "other" for name in ORDER if name != "fully_masked_row"},
    # Flipped, a fully masked row attends everything and the NaN keys are attended (and the
    # softcap probe's mask is wrong).
    "flipped_mask": {"mask_polarity": "drop", "fully_masked_row": "unmasked",
                     "masked_value_leak": "nan", "softcap_order": "other"},
    "upper_left_always": {"causal_alignment": "upper_left", "segment_positions": "upper_left",
                          "alibi_alignment": "upper_left"},
    "no_max_subtraction": {},  # no probe has large logits: the catalog's extreme cases do
    "float16_accumulation": {"low_precision_accumulation": "low"},
    "nan_for_empty_rows": {"fully_masked_row": "nan"},
    "interleaved_gqa": {"gqa_mapping": "interleaved"},
    "softcap_after_mask": {"softcap_order": "after_mask"},
    "window_off_by_one": {},  # windows are graded by the catalog, not fingerprinted
    "kv_lengths_ignored": {"kv_padding_leak": "nan"},
    # defects no probe is about: the catalog's cases catch them (tests/test_mutation_score.py)
    "q_lengths_ignored": {}, "causal_dropped_single_row": {}, "lse_base2": {},
    "weights_unnormalised": {}, "dropout_unscaled": {}, "nan_as_masked": {},
    "float64_as_float32": {}, "no_argument_checks": {},
    "sinks_ignored": {},  # no probe passes sinks
    "alibi_without_offset": {"alibi_alignment": "upper_left"},
    "alibi_signed": {"alibi_alignment": "signed"},
    "positions_ignored": {},  # nor positions
    "segments_global_positions": {"segment_positions": "global"},
    # padding is one more segment, so its K/V (inf) is not zeroed either: 0 * inf in P @ V
    "segment_padding_attended": {"segment_padding_leak": "nan"},
    "segment_padding_not_zeroed": {"segment_padding_leak": "nan"},
    "score_mod_after_bias": {}, "mask_mod_transposed": {},
    "partial_page_read": {}, "batch_dependent": {},
    "short_query_upper_left": {},
    "finfo_min_masking": {"fully_masked_row": "mean_v"},  # as JAX
    # as torch SDPA: NaN scores of masked keys (here padding) survive the added -inf
    "additive_masking": {"masked_value_leak": "nan", "segment_padding_leak": "nan"},
    "padding_not_zeroed": {"kv_padding_leak": "nan"},
    "bias_before_scale": {"softcap_order": "other"},  # the only probe with a bias
    # off by 2**-12 everywhere: no candidate is that close, but zeros stay zeros and the
    # half-precision probe's error is within float32 accumulation
    "tiny_relative_error": {name: "other" for name in ORDER
                            if name not in ("fully_masked_row", "low_precision_accumulation")},
    "out_blhd": {name: "other" for name in ORDER},  # every output in the wrong layout
}


@pytest.mark.parametrize("defect", list(BROKEN))
def test_broken_implementation_shows_its_defect(defect):
    assert deviations(fingerprint(adapter(defect))) == BROKEN_ANSWERS[defect]


def test_probes_outside_the_declaration_are_not_applicable():
    # Behaviour features (empty_rows, poison_scores, ...) are observed, never required: the
    # fully masked row and the masked NaN keys are probed with a mask alone.
    assert {"empty_rows", "poison_scores"} <= BEHAVIOURS
    answers = fingerprint(adapter("correct", features=["mask"], dtypes=["float32", "float64"]))
    assert answers == {
        "mask_polarity": "keep", "causal_alignment": "n/a", "fully_masked_row": "zeros",
        "low_precision_accumulation": "n/a", "masked_value_leak": "none",
        "kv_padding_leak": "n/a", "softcap_order": "n/a", "gqa_mapping": "n/a",
        **FORMS_NOT_APPLICABLE,
    }


@pytest.mark.parametrize("name", ["correct", "softcap_after_mask"])
def test_probes_fall_back_to_causal_masking_without_a_mask(name):
    # Like flash-attention: causal (lower-right) and softcap, but no mask, no bias, half only.
    answers = fingerprint(adapter(name, features=["causal_lower_right", "lq_ne_lk", "softcap"],
                                  dtypes=["float16"]))
    assert answers["mask_polarity"] == "n/a"
    assert answers["causal_alignment"] == "lower_right"
    assert answers["fully_masked_row"] == "zeros"  # rows before the lower-right diagonal
    assert answers["low_precision_accumulation"] == "float32"
    want = "before_bias_and_mask" if name == "correct" else "after_mask"
    assert answers["softcap_order"] == want


def test_a_probe_that_raises_reports_the_exception_class():
    answers = fingerprint(adapter("raises_on_softcap"))
    assert answers == {**SPEC_ANSWERS, "softcap_order": "error: NotImplementedError"}


def test_fingerprint_runs_through_the_callers_call():
    # The runner passes its own wrapper around adapter.run; the adapter only decides what
    # can run and in which dtype.
    impl = adapter("correct")
    seen: list[Case] = []

    def call(case, inputs):
        seen.append(case)
        assert set(inputs) >= {"query", "key", "value"}
        return impl.run(case, inputs)

    assert fingerprint(call, impl) == SPEC_ANSWERS
    assert len(seen) == len(PROBES)
    for case in seen:
        assert case.id.startswith("probe/")
        assert case.op == "attention"
        assert case.rules
    assert {c.dtype for c in seen} == {"float32", "float16"}


# -- the frameworks, through minimal local adapters ------------------------------------------

class _TorchSdpa(Adapter):
    """torch.nn.functional.scaled_dot_product_attention with a bool mask and causal."""

    name = "torch.sdpa (test)"
    backend_name = "torch-cpu"
    features = frozenset({"mask", "causal", "causal_lower_right", "lq_ne_lk", "gqa"})

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        import torch
        from torch.nn.attention.bias import causal_lower_right

        q, k, v = args["query"], args["key"], args["value"]
        kwargs: dict[str, Any] = {"enable_gqa": q.shape[-3] != k.shape[-3]}
        if "mask" in args:
            kwargs["attn_mask"] = args["mask"]
        if args.get("causal") and args.get("alignment") == "lower_right":
            kwargs["attn_mask"] = causal_lower_right(q.shape[-2], k.shape[-2])
        elif args.get("causal"):
            kwargs["is_causal"] = True
        return {"out": torch.nn.functional.scaled_dot_product_attention(q, k, v, **kwargs)}


class _JaxDotProductAttention(Adapter):
    """jax.nn.dot_product_attention (layout (B, L, H, D)) with a bool mask and causal."""

    name = "jax.dot_product_attention (test)"
    backend_name = "jax-cpu"
    features = frozenset({"mask", "causal", "lq_ne_lk", "gqa"})

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        import jax
        import jax.numpy as jnp

        q, k, v = (jnp.swapaxes(args[n], -2, -3) for n in ("query", "key", "value"))
        out = jax.nn.dot_product_attention(q, k, v, mask=args.get("mask"),
                                           is_causal=bool(args.get("causal")))
        return {"out": jnp.swapaxes(out, -2, -3)}


def test_torch_sdpa_leaks_nan_from_masked_keys():
    answers = fingerprint(_available(_TorchSdpa()))
    assert answers == {**SPEC_ANSWERS, "masked_value_leak": "nan", "kv_padding_leak": "n/a",
                       "softcap_order": "n/a", **FORMS_NOT_APPLICABLE}


def test_jax_gives_the_mean_of_v_for_a_fully_masked_row():
    answers = fingerprint(_available(_JaxDotProductAttention()))
    # No lower-right option: the probe asks for (and gets) upper-left causal masking.
    assert answers == {**SPEC_ANSWERS, "causal_alignment": "upper_left",
                       "fully_masked_row": "mean_v", "kv_padding_leak": "n/a",
                       "softcap_order": "n/a", **FORMS_NOT_APPLICABLE}


#: Neither test adapter above takes segment ids or ALiBi slopes.
FORMS_NOT_APPLICABLE = {"segment_positions": "n/a", "segment_padding_leak": "n/a",
                        "alibi_alignment": "n/a"}


@pytest.mark.parametrize(("target", "probe", "answer"), [
    ("torch.sdpa", "masked_value_leak", "nan"),
    ("jax.dot_product_attention", "fully_masked_row", "mean_v"),
    # the block mask excludes padding, but 0 * inf in P @ V does not (a declared deviation)
    ("torch.flex_attention", "segment_padding_leak", "nan"),
    ("torch.flex_attention", "segment_positions", "per_segment"),
])
def test_builtin_adapters_show_the_same_differences(target, probe, answer):
    assert fingerprint(_available(resolve(target)))[probe] == answer


def test_fingerprint_is_deterministic():
    impl = adapter("wrong_scale")
    first = fingerprint(impl)
    assert fingerprint(impl) == first
