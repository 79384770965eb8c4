"""Scenes of the synthetic world: what is in a picture or a clip, how it is sampled, how it is drawn.

A scene is a background and one to three :class:`Thing` s, each a shape of one
colour and size at one of five places. Within a scene, shapes, colours and
places are all distinct, so "the circle", "the red shape" and "the shape on the
left" each name exactly one thing.

Pictures are still scenes (``event="still"``). Clips add one event:

- ``moves``: ``things[0]`` crosses the frame in ``direction``; an optional second thing stays still.
- ``appears``: two or three things appear one after another, in the order of ``things``.
- ``changes``: ``things[0]`` turns from ``color`` to ``color_after`` half-way; an optional second thing stays.

Time runs over a clip as a fraction ``u`` in ``[0, 1]`` (first frame 0, last 1).
Rendering is pure: the same scene and size give the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
DIRECTIONS = ("left", "right", "up", "down")
EVENTS = ("moves", "appears", "changes")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"black": (28, 28, 34), "gray": (105, 105, 112)}

Event = Literal["still", "moves", "appears", "changes"]

# Geometry, as fractions of the frame side.
DIAMETER = {"small": 0.18, "large": 0.30}
PLACES = {"left": (0.18, 0.5), "right": (0.82, 0.5), "top": (0.5, 0.18), "bottom": (0.5, 0.82), "center": (0.5, 0.5)}
JITTER = 0.02  # the most a still thing's centre moves away from its place
TRAVEL = 0.6  # how far a moving thing crosses the frame
LANES = (0.25, 0.75)  # the two parallel tracks of a clip with motion: the mover uses one, a bystander the other
STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
TINT = 12  # the most a thing's colour channels differ from the named colour
TEXTURE = 5  # the most a background pixel differs from the background colour
SUPERSAMPLE = 4  # shapes are drawn this many times larger, then averaged down (anti-aliasing)


@dataclass(frozen=True)
class Thing:
    """One shape. ``x``, ``y``: its centre at the start (fractions of the side; y grows downwards).

    ``position`` names its place at the start (one of :data:`POSITIONS`; for a
    moving thing the side of the frame its lane lies on). ``dx``, ``dy`` is its
    displacement over the clip, ``color_after`` its colour from half-way on and
    ``appears`` the time from which it is visible.
    """

    shape: str
    color: str
    size: str
    position: str
    x: float
    y: float
    tint: tuple[int, int, int] = (0, 0, 0)
    dx: float = 0.0
    dy: float = 0.0
    color_after: str | None = None
    appears: float = 0.0

    def colors(self) -> tuple[str, ...]:
        """Every colour the thing shows, in order."""
        return (self.color,) if self.color_after is None else (self.color, self.color_after)

    def at(self, u: float) -> tuple[float, float, str] | None:
        """``(x, y, colour)`` at time ``u``, or None while it has not appeared."""
        if u < self.appears:
            return None
        color = self.color_after if self.color_after is not None and u >= 0.5 else self.color
        return self.x + u * self.dx, self.y + u * self.dy, color


@dataclass(frozen=True)
class Scene:
    """A background, the things in it and, for clips, what happens (see the module docstring)."""

    background: str
    things: tuple[Thing, ...]
    event: Event = "still"
    direction: str | None = None
    texture: int = 0  # seed of the background's light texture

    def to_dict(self) -> dict:
        """Plain data for JSON."""
        return {
            "background": self.background,
            "event": self.event,
            "direction": self.direction,
            "texture": self.texture,
            "things": [dict(vars(t), tint=list(t.tint)) for t in self.things],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        things = tuple(Thing(**dict(t, tint=tuple(t["tint"]))) for t in data["things"])
        return cls(data["background"], things, data["event"], data["direction"], data["texture"])


# -- sampling -------------------------------------------------------------------
def _pick(rng: np.random.Generator, options, k: int | None = None):
    """One option (or ``k`` distinct ones) as plain Python values."""
    options = list(options)
    if k is None:
        return options[int(rng.integers(len(options)))]
    return [options[int(i)] for i in rng.choice(len(options), size=k, replace=False)]


def _thing(rng: np.random.Generator, shape: str, color: str, position: str, x: float, y: float, **motion) -> Thing:
    """A thing of random size and tint at ``(x, y)``."""
    tint = tuple(int(v) for v in rng.integers(-TINT, TINT + 1, size=3))
    return Thing(shape, color, _pick(rng, SIZES), position, x, y, tint, **motion)


def _placed(rng: np.random.Generator, shape: str, color: str, position: str, **motion) -> Thing:
    """A thing at its named place, slightly jittered."""
    px, py = PLACES[position]
    jx, jy = rng.uniform(-JITTER, JITTER, size=2)
    return _thing(rng, shape, color, position, px + float(jx), py + float(jy), **motion)


def _background(rng: np.random.Generator) -> tuple[str, int]:
    return _pick(rng, BACKGROUNDS), int(rng.integers(2**31))


def sample_image_scene(rng: np.random.Generator) -> Scene:
    """A still scene of 1-3 things, each count equally likely."""
    background, texture = _background(rng)
    n = int(rng.integers(1, 4))
    shapes, colors, places = _pick(rng, SHAPES, n), _pick(rng, COLORS, n), _pick(rng, POSITIONS, n)
    things = tuple(_placed(rng, s, c, p) for s, c, p in zip(shapes, colors, places))
    return Scene(background, things, "still", None, texture)


def sample_video_scene(rng: np.random.Generator) -> Scene:
    """A clip scene; its event, and the direction of a motion, are equally likely."""
    background, texture = _background(rng)
    event = _pick(rng, EVENTS)
    bystander = bool(rng.random() < 0.5)
    if event == "moves":
        direction = _pick(rng, DIRECTIONS)
        shapes, colors = _pick(rng, SHAPES, 2), _pick(rng, COLORS, 2)
        sx, sy = STEP[direction]
        lane, other = (LANES if rng.random() < 0.5 else LANES[::-1])
        horizontal = sy == 0
        start = 0.5 - TRAVEL / 2 * (sx or sy)
        x, y = (start, lane) if horizontal else (lane, start)
        side = ("top", "bottom") if horizontal else ("left", "right")
        mover = _thing(rng, shapes[0], colors[0], side[lane > 0.5], x, y, dx=TRAVEL * sx, dy=TRAVEL * sy)
        things = [mover]
        if bystander:
            bx, by = (0.5, other) if horizontal else (other, 0.5)
            things.append(_thing(rng, shapes[1], colors[1], side[other > 0.5], bx, by))
        return Scene(background, tuple(things), "moves", direction, texture)
    if event == "appears":
        n = int(rng.integers(2, 4))
        shapes, colors, places = _pick(rng, SHAPES, n), _pick(rng, COLORS, n), _pick(rng, POSITIONS, n)
        things = tuple(
            _placed(rng, s, c, p, appears=0.9 * (k + 0.5) / n)
            for k, (s, c, p) in enumerate(zip(shapes, colors, places))
        )
        return Scene(background, things, "appears", None, texture)
    shapes, colors, places = _pick(rng, SHAPES, 2), _pick(rng, COLORS, 3), _pick(rng, POSITIONS, 2)
    things = [_placed(rng, shapes[0], colors[0], places[0], color_after=colors[1])]
    if bystander:
        things.append(_placed(rng, shapes[1], colors[2], places[1]))
    return Scene(background, tuple(things), "changes", None, texture)


# -- rendering ------------------------------------------------------------------
def _outline(shape: str, cx: float, cy: float, d: float) -> list[tuple[float, float]] | tuple[float, ...]:
    """The polygon (or, for a circle, the bounding box) of a shape of diameter ``d`` centred at ``(cx, cy)``."""
    r = d / 2
    if shape == "circle":
        return (cx - r, cy - r, cx + r, cy + r)
    if shape == "square":
        h = 0.85 * r  # a square of the same area as the circle looks the same size
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)]
    if shape == "star":
        angles = np.pi * (np.arange(10) / 5 - 0.5)
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        return [(cx + float(q * np.cos(a)), cy + float(q * np.sin(a))) for q, a in zip(radii, angles)]
    if shape == "cross":
        w = 0.35 * r
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
                (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
                (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(f"unknown shape {shape!r}")


def _coverage(shape: str, x: float, y: float, size: str, side: int) -> np.ndarray:
    """How much of each pixel the shape covers: ``[side, side]`` float in [0, 1]."""
    big = side * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    outline = _outline(shape, x * big, y * big, DIAMETER[size] * big)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse(outline, fill=255)
    else:
        draw.polygon(outline, fill=255)
    return np.asarray(mask.resize((side, side), Image.Resampling.BOX), dtype=np.float32) / 255.0


def _backdrop(scene: Scene, side: int) -> np.ndarray:
    """The lightly textured background: ``[side, side, 3]`` float."""
    noise = np.random.default_rng(scene.texture).integers(-TEXTURE, TEXTURE + 1, size=(side, side, 1))
    return np.asarray(BACKGROUNDS[scene.background], dtype=np.float32) + noise


def render_frame(scene: Scene, side: int, u: float = 0.0, backdrop: np.ndarray | None = None) -> np.ndarray:
    """The scene at time ``u``: ``[side, side, 3]`` uint8 RGB."""
    canvas = _backdrop(scene, side) if backdrop is None else backdrop.copy()
    for thing in scene.things:
        state = thing.at(u)
        if state is None:
            continue
        x, y, color = state
        alpha = _coverage(thing.shape, x, y, thing.size, side)[..., None]
        rgb = np.clip(np.add(COLORS[color], thing.tint), 0, 255).astype(np.float32)
        canvas = canvas * (1 - alpha) + rgb * alpha
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def render_image(scene: Scene, side: int) -> Image.Image:
    """A still scene as a ``side`` x ``side`` RGB picture."""
    return Image.fromarray(render_frame(scene, side))


def render_clip(scene: Scene, side: int, num_frames: int) -> list[np.ndarray]:
    """A clip scene as ``num_frames`` frames, each ``[side, side, 3]`` uint8 RGB, evenly spaced in time."""
    backdrop = _backdrop(scene, side)
    times = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else [0.0]
    return [render_frame(scene, side, float(u), backdrop) for u in times]
