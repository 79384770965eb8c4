"""Renaming a state dict's keys by rules: the parameter names of other code bases and vlreg's.

A rule is a pair ``(vlreg name, other name)``. A name is a module path (matching its
``.weight`` and ``.bias``) or a full parameter name; ``{i}`` stands for a layer index.
A key is renamed by every rule it matches, so one table serves both directions, and tied
or copied weights are simply two rules with the same name on one side. The tables live
next to the modules they name (:mod:`vlreg.models.bridges.qformer_keys`,
:mod:`vlreg.models.encoders.vision_keys`).
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    from torch import Tensor

Rule = tuple[str, str]


@functools.lru_cache(maxsize=None)
def _pattern(name: str) -> re.Pattern:
    return re.compile("^" + re.escape(name).replace(r"\{i\}", r"(?P<i>\d+)") + r"(?P<suffix>\.weight|\.bias)?$")


def rename(state: Mapping[str, Tensor], rules: Iterable[Rule], to_vlreg: bool) -> dict[str, Tensor]:
    """Rename ``state``'s keys by ``rules`` (towards vlreg's names or away from them).

    Keys no rule matches are left out (a BLIP-2 checkpoint also holds the vision model and
    the LLM). Where two keys map to one name (tied weights), the first wins.
    """
    oriented = [(theirs, ours) if to_vlreg else (ours, theirs) for ours, theirs in rules]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        for source, target in oriented:
            match = _pattern(source).match(key)
            if match:
                index = match.groupdict().get("i")
                name = target.replace("{i}", index) if index is not None else target
                out.setdefault(name + (match["suffix"] or ""), value)
    return out
