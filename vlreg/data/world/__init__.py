"""A small synthetic world written in the official formats of COCO, VQAv2, MSRVTT and WebDataset.

No real dataset can be downloaded on the machines vlreg is built on, so vlreg
generates one: pictures and clips of simple coloured shapes, captions and
questions that are true of them, a text-only corpus about scenes never rendered,
and attribute labels; deterministic from a seed::

    python -m vlreg.data.world --out DIR [--size small|default|large] [--seed N]

    from vlreg.data.world import make_world
    root = make_world("worlds/default", size="default", seed=0)

Layout under the world's root (each part is described in the module that writes it)::

    coco/images/{train2014,val2014}/COCO_<split>_%012d.jpg      write_coco
    coco/annotations/coco_karpathy_{train,val,test}[_gt].json
    vqav2/v2_OpenEnded_mscoco_<split>_questions.json ...         write_vqav2
    msrvtt/videos/all/video%d.mp4, msrvtt/annotations/...        write_msrvtt
    webdataset/pairs-%06d.tar                                    write_webdataset
    text/corpus.txt, text/corpus.jsonl                           write_text
    attributes/{images,videos,scenes}.json                       write_attributes
    world.json                                                   the manifest (generate)

:func:`text_only_baseline` scores the best guesses that ignore the media: what a
trained model must beat. The ``world_attributes`` dataset (:mod:`.attributes`) reads the
attribute labels. A project generates its world in a stage of its own, ``make_world``,
registered with the world's other stages in :mod:`vlreg.world`.
"""

from __future__ import annotations

from typing import Any

from .generate import ensure_world, make_world, size_preset
from .plan import SIZES, WorldSize

__all__ = ["SIZES", "WorldSize", "ensure_world", "make_world", "text_only_baseline", "size_preset"]


def text_only_baseline(world_dir: Any, **kwargs: Any) -> dict:
    """Scores of the text-only guessers on a world's evaluation splits (see :mod:`vlreg.data.world.baseline`)."""
    from .baseline import text_only_baseline as _baseline

    return _baseline(world_dir, **kwargs)
