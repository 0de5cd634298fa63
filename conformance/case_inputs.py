"""What a case hands an implementation: the call's arguments, and beside them (never among
them) what the suite itself needs.

:class:`Inputs` is a mapping of the call's arguments (``query``, ``key``, ..., ``causal``,
``scale``; ``x``/``where``/``axis`` for the softmax family) and carries, as typed attributes,
the output cotangent of a gradient case, the untransformed inputs of an invariance case, the
key permutation and per-argument dtype overrides. Before these were ``__cotangent__``-style
keys in the same dict, and every consumer had to remember to skip them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np

__all__ = ["Inputs"]


class Inputs(MutableMapping[str, Any]):
    """A case's call arguments (the mapping) and what travels beside them.

    Attributes
    ----------
    cotangent : ndarray or None
        The cotangent of ``out`` of a gradient case (rounded to the case dtype).
    base : Inputs or None
        An invariance case's inputs before the transform: the golden is computed from them
        and transformed back (``permutation``, ``shift``).
    permutation : ndarray or None
        The key permutation of a ``permute`` case.
    dtypes : dict of str to str
        Arguments to hand over in another dtype than the case's (the mixed-dtype error case).
    variants : list of Inputs
        A consistency case's further calls, compared with this one (``consistency.py``).
    """

    def __init__(self, args: Mapping[str, Any] | None = None, *,
                 cotangent: np.ndarray | None = None, base: Inputs | None = None,
                 permutation: np.ndarray | None = None,
                 dtypes: Mapping[str, str] | None = None) -> None:
        self.args: dict[str, Any] = dict(args or {})
        self.cotangent = cotangent
        self.base = base
        self.permutation = permutation
        self.dtypes: dict[str, str] = dict(dtypes or {})
        self.variants: list[Inputs] = []

    def __getitem__(self, name: str) -> Any:
        return self.args[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.args[name] = value

    def __delitem__(self, name: str) -> None:
        del self.args[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.args)

    def __len__(self) -> int:
        return len(self.args)

    def __repr__(self) -> str:
        extras = [n for n in ("cotangent", "base", "permutation") if getattr(self, n) is not None]
        extras += ["dtypes"] if self.dtypes else []
        return f"Inputs({sorted(self.args)}" + (f", with {', '.join(extras)})" if extras else ")")

    @property
    def originals(self) -> Inputs:
        """The inputs the golden is computed from: :attr:`base` where the case transformed
        them, else these."""
        return self.base if self.base is not None else self

    def copy(self) -> Inputs:
        """A shallow copy (the arrays are shared, the mapping and the extras are not)."""
        copy = Inputs(self.args, cotangent=self.cotangent, base=self.base,
                      permutation=self.permutation, dtypes=self.dtypes)
        copy.variants = list(self.variants)
        return copy

    def options(self) -> dict[str, Any]:
        """Every argument but ``query``, ``key`` and ``value``."""
        return {k: v for k, v in self.args.items() if k not in ("query", "key", "value")}

    def mask_options(self) -> dict[str, Any]:
        """The arguments that decide "may attend", as ``attnspec.attention_mask`` takes them
        (the naive references and the analytic backward build their masks from these)."""
        return {k: v for k, v in self.args.items() if k in MASK_OPTIONS}


#: ``attnspec.attention_mask``'s keywords (besides ``xp`` and ``device``).
MASK_OPTIONS = frozenset({"mask", "causal", "window", "alignment", "kv_lengths", "q_lengths",
                          "q_positions", "kv_positions", "q_segment_ids", "kv_segment_ids"})
