"""``make_world``: the first stage of the world's recipes, which generates the world when it is missing.

A stage::

    - name: world
      task: {name: make_world, root: "${vars.world}", size: default, seed: 0}

The world is a client of vlreg's public API (see :mod:`vlreg.world`): nothing in the
pipeline knows about worlds, and a project on real data simply has no such stage.
"""

from __future__ import annotations

from typing import Any

from ..build import checked
from ..data.world.plan import SIZES
from ..errors import ConfigError, did_you_mean
from ..registry import register
from ..tasks.preparation import Preparation


def _a_world_size(value: Any, where: str) -> None:
    if value not in SIZES:
        raise ConfigError(f"{where}: {value!r} is not a world size{did_you_mean(str(value), SIZES)}; "
                          f"sizes: {', '.join(SIZES)}")


@register("task", "make_world")
class MakeWorld(Preparation):
    """Generate the synthetic world at ``root`` unless the same world is already there (see :func:`ensure_world`).

    Args:
        root: the world's directory.
        size: ``small`` (tests, seconds), ``default`` (the main job) or ``large`` (10x the training pairs).
        seed: the world's random seed; the same arguments give the same files.
    """

    def __init__(self, root: str = "world", size: checked(str, _a_world_size) = "default", seed: int = 0):
        self.root, self.size, self.seed = root, size, seed

    def prepare(self) -> None:
        from ..data.world.generate import ensure_world

        ensure_world(self.root, size=self.size, seed=self.seed)
