"""Bridges: visual tokens ``[B, N, Dv]`` -> soft prompts ``[B, Q, Dllm]`` in an LLM's embedding space.

- :mod:`.qformer`: ``qformer`` (BLIP-2's querying transformer);
- :mod:`.projectors`: ``linear`` and ``mlp`` (per-token projections, optionally pooled to Q tokens);
- :mod:`.perceiver`: ``perceiver`` (Flamingo's resampler).

Each module is imported by the registry on the first lookup of one of its names.
"""

from __future__ import annotations

from typing import Optional

from ...errors import ConfigError


def require_widths(bridge: str, vision_width: Optional[int], llm_width: Optional[int]) -> tuple[int, int]:
    """``(vision_width, llm_width)``, or a ConfigError when one is unknown.

    The assembled model fills both from the encoder and the LLM; a bridge built on its
    own must be given them.
    """
    for name, value in (("vision_width", vision_width), ("llm_width", llm_width)):
        if value is None:
            raise ConfigError(f"bridge {bridge!r} needs {name}: set it, or build the bridge inside a model, "
                              "which takes it from the encoder and the LLM")
        if value < 1:
            raise ConfigError(f"bridge {bridge!r}: {name} must be positive, got {value}")
    return vision_width, llm_width
