"""What tests share besides fixtures: the checkout's paths and the synthetic captions the tokenizers train on."""

from __future__ import annotations

import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout
ASSETS = ROOT / "tests" / "assets"  # files the tests read: configs, pinned numbers, committed tokenizers

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star"]
PLACES = ["on the left", "on the right", "at the top", "at the bottom", "in the centre"]


def corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """Sentences in the style of the synthetic world's captions."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        colour, shape, place = rng.choice(COLOURS), rng.choice(SHAPES), rng.choice(PLACES)
        size = rng.choice(["a small", "a large", "a"])
        lines.append(f"{size} {colour} {shape} {place}")
    return lines
