"""The fingerprint: which convention an implementation follows where frameworks disagree.

A conformance run says whether an implementation follows docs/spec.md; where it does not
(or where a behaviour is outside its declared features), the fingerprint says what it does
instead: which mask polarity, which causal alignment, what a fully masked row gives, whether
half precision accumulates in float32, whether NaN leaks from masked keys or KV padding, where
softcap sits, how grouped-query heads map, and for packed sequences and ALiBi where the
diagonal sits, whether padding leaks and which distance is used. Each probe runs one small
case (not graded) and names the output after the closest of several candidate outputs, each
computed in float64 by attnspec under one alternative semantics.

==========================  ===========================================  =====================
probe                       answers                                      spec
==========================  ===========================================  =====================
mask_polarity               keep, drop                                   keep
causal_alignment            upper_left, lower_right, none                lower_right (asked)
fully_masked_row            zeros, nan, mean_v, unmasked                 zeros
low_precision_accumulation  float32, low                                 float32
masked_value_leak           none, nan                                    none
kv_padding_leak             none, nan                                    none
softcap_order               before_bias_and_mask, after_bias,            before_bias_and_mask
                            after_mask, none
gqa_mapping                 contiguous, interleaved                      contiguous
segment_positions           per_segment, upper_left, global              per_segment (asked)
segment_padding_leak        none, nan                                    none
alibi_alignment             lower_right, upper_left, signed, none        lower_right (asked)
==========================  ===========================================  =====================

Besides its answers, every probe can give ``"other"`` (no candidate matched), ``"n/a"`` (the
adapter cannot express the probe's inputs, behaviour features aside: those are what is
observed) or ``"error: <ExceptionClass>"`` (the call raised). ``causal_alignment`` asks for
lower-right alignment where the adapter declares it and upper-left otherwise, so its answer
is right when it names the alignment asked. ``mean_v`` is the mean of every V row (JAX);
``unmasked`` a softmax over the row's raw scores, as if nothing were masked.

The parts: :mod:`.probe` (what a probe is and how an output is named), :mod:`.probes` (the
probes), :mod:`.probes_forms` (those of the input forms) and :mod:`.alternatives` (the
semantics the candidates are computed under).
"""

from __future__ import annotations

from .adapters.base import Adapter
from .probe import NOT_APPLICABLE, OTHER, Call, Probe
from .probes import PROBES, SPEC_ANSWERS

__all__ = ["NOT_APPLICABLE", "OTHER", "PROBES", "SPEC_ANSWERS", "Probe", "fingerprint"]


def fingerprint(call: Call | Adapter, adapter: Adapter | None = None) -> dict[str, str]:
    """Run every probe and name what the implementation does.

    Parameters
    ----------
    call : callable or Adapter
        ``call(case, inputs) -> AdapterOutput`` runs one case on the implementation and may
        raise (the runner passes its own wrapper around ``adapter.run``). An
        :class:`Adapter` stands for its own ``run`` (and for ``adapter`` when that is not
        given).
    adapter : Adapter, optional
        Decides which probes the implementation can express (``not_applicable``, with the
        behaviour features ignored) and in which dtype they run (``dtypes()``). Without
        one, every probe runs, in float32 (float16 for the half-precision probe).

    Returns
    -------
    dict of str to str
        Probe name -> answer, in :data:`PROBES` order. Answers are the probe's ``answers``,
        ``"other"``, ``"n/a"`` or ``"error: <ExceptionClass>"``.
    """
    if isinstance(call, Adapter):
        adapter = call if adapter is None else adapter
        call = call.run
    return {name: probe.observe(call, adapter) for name, probe in PROBES.items()}
