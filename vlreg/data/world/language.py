"""The language of the synthetic world: captions, questions and annotators' answers, true to a scene.

Captions vary through templates and synonyms but every caption names every thing
in the scene by its colour and shape (the colour names have no synonyms), so each
one is true and picks its scene out from scenes with other things. Sizes and
places (pictures) and how the event unfolds (clips) appear in some templates.

Questions come in templates whose answers are balanced: a template's answer is
(close to) uniform over its values, and yes/no questions are asked about a thing
that is there or, as often, one that is not, so that the text of a question
alone tells little about its answer.

:class:`Question` carries the VQAv2 metadata (``question_type`` as in the real
data, "what color is the", "how many", ...; ``answer_type`` "yes/no", "number"
or "other"). :func:`annotate` plays ten annotators who mostly give the truth and
sometimes a synonym or a neighbouring answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .scenes import COLORS, POSITIONS, SHAPES, Scene, Thing

SHAPE_WORDS = {"circle": ("circle", "disc"), "square": ("square",), "triangle": ("triangle",),
               "star": ("star",), "cross": ("cross", "plus sign")}
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
PLACE_PHRASES = {
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "center": ("in the center", "in the middle"),
}
DIRECTION_PHRASES = {
    "left": ("to the left", "leftward", "from right to left"),
    "right": ("to the right", "rightward", "from left to right"),
    "up": ("up", "upward", "from the bottom to the top"),
    "down": ("down", "downward", "from the top to the bottom"),
}
BACKGROUND_WORDS = {"black": ("black", "dark"), "gray": ("gray", "grey")}
COUNT_WORDS = ("zero", "one", "two", "three")

# What annotators say instead of the truth: a synonym, or a neighbouring answer.
ANSWER_SYNONYMS = {
    "purple": ("violet",), "circle": ("round", "disc"), "cross": ("plus",), "center": ("middle",),
    "top": ("up",), "bottom": ("down",), "left": ("left side",), "right": ("right side",),
    "0": ("zero", "none"), "1": ("one",), "2": ("two",), "3": ("three",), "yes": ("yeah",),
}
ANSWER_NEIGHBOURS = {
    "red": ("orange", "purple"), "orange": ("red", "yellow"), "yellow": ("orange", "white"),
    "green": ("yellow", "blue"), "blue": ("purple", "green"), "purple": ("blue", "red"), "white": ("yellow",),
    "circle": ("square",), "square": ("circle",), "triangle": ("star",), "star": ("triangle", "cross"),
    "cross": ("star",), "left": ("center",), "right": ("center",), "top": ("center",), "bottom": ("center",),
    "center": ("left", "right", "top", "bottom"), "0": ("1",), "1": ("0", "2"), "2": ("1", "3"), "3": ("2",),
    "yes": ("no",), "no": ("yes",),
}
SYNONYM_RATE, NEIGHBOUR_RATE, MAX_DISSENT = 0.08, 0.08, 4
IMAGE_ANSWERS = (*COLORS, *SHAPES, *POSITIONS, "0", "1", "2", "3", "yes", "no")  # every true answer about a picture


@dataclass(frozen=True)
class Question:
    """A question about a scene and its true answer (one word, or a digit for counts)."""

    question: str
    answer: str
    question_type: str
    answer_type: str  # "yes/no" | "number" | "other"


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def with_article(phrase: str) -> str:
    """``'a red circle'``, ``'an orange star'``."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def join(phrases: Sequence[str]) -> str:
    """``'x'``, ``'x and y'``, ``'x, y and z'``."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def noun(thing: Thing, rng: np.random.Generator, size: bool = False, place: bool = False) -> str:
    """``'large red circle on the left'``: colour and shape always, size and place on request."""
    words = [_pick(rng, SIZE_WORDS[thing.size])] if size else []
    words += [thing.color, _pick(rng, SHAPE_WORDS[thing.shape])]
    if place:
        words.append(_pick(rng, PLACE_PHRASES[thing.position]))
    return " ".join(words)


def distinct(make: Callable[[], str], n: int, attempts: int = 60) -> list[str]:
    """``n`` different results of ``make`` (repeats only when it cannot find enough)."""
    out: list[str] = []
    for _ in range(attempts):
        text = make()
        if text not in out:
            out.append(text)
        if len(out) == n:
            return out
    return (out * n)[:n]


# -- captions -------------------------------------------------------------------
def _still_caption(scene: Scene, rng: np.random.Generator) -> str:
    size, place = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    bare = [noun(scene.things[i], rng, size, place) for i in rng.permutation(len(scene.things))]
    listing, n = join([with_article(b) for b in bare]), len(bare)
    frames = [
        lambda: listing,
        lambda: f"a picture of {listing}",
        lambda: f"an image showing {listing}",
        lambda: f"{listing} on {with_article(_pick(rng, BACKGROUND_WORDS[scene.background]))} background",
        lambda: f"there is {listing}" if n == 1 else f"there are {COUNT_WORDS[n]} shapes: {listing}",
        lambda: f"a single {bare[0]}" if n == 1 else f"{COUNT_WORDS[n]} shapes, {listing}",
    ]
    return _pick(rng, frames)()


def _moves_caption(scene: Scene, rng: np.random.Generator) -> str:
    mover, *rest = scene.things
    subject = noun(mover, rng, size=bool(rng.random() < 0.5))
    way = _pick(rng, DIRECTION_PHRASES[scene.direction])
    verb = _pick(rng, ("moves", "is moving", "slides", "travels", "goes"))
    if rng.random() < 0.5:
        clause = f"{with_article(subject)} {verb} {way}"
    else:
        clause = f"the {subject} {verb} {way}"
    if rest:
        still = with_article(noun(rest[0], rng))
        clause += _pick(rng, (f" while {still} stays still", f" and {still} does not move", f" past {still}"))
    return clause


def _appears_caption(scene: Scene, rng: np.random.Generator) -> str:
    nouns = [with_article(noun(t, rng, size=bool(rng.random() < 0.3))) for t in scene.things]
    n = len(nouns)
    then = ", then ".join(nouns[1:])
    frames = [
        lambda: f"first {nouns[0]} appears, then {then}",
        lambda: f"{nouns[0]} appears, followed by {join(nouns[1:])}",
        lambda: f"{COUNT_WORDS[n]} shapes appear one after another: {join(nouns)}",
        lambda: f"{nouns[0]} shows up first and {nouns[-1]} last" if n == 2
        else f"{nouns[0]} shows up first, then {nouns[1]}, and {nouns[2]} last",
        lambda: f"shapes appear one by one: {join(nouns)}",
    ]
    return _pick(rng, frames)()


def _changes_caption(scene: Scene, rng: np.random.Generator) -> str:
    changer, *rest = scene.things
    shape = _pick(rng, SHAPE_WORDS[changer.shape])
    size = f"{_pick(rng, SIZE_WORDS[changer.size])} " if rng.random() < 0.4 else ""
    before, after = changer.color, changer.color_after
    frames = [
        lambda: f"{with_article(size + shape)} changes color from {before} to {after}",
        lambda: f"{with_article(f'{size}{before} {shape}')} turns {after}",
        lambda: f"the {size}{shape} switches from {before} to {after}",
        lambda: f"{with_article(size + shape)} that was {before} becomes {after}",
        lambda: f"the {size}{before} {shape} turns into {with_article(f'{size}{after} {shape}')}",
    ]
    clause = _pick(rng, frames)()
    if rest:
        other = with_article(noun(rest[0], rng))
        clause += _pick(rng, (f" while {other} stays the same", f" next to {other}", f" and {other} does not change"))
    return clause


_CAPTIONERS = {"still": _still_caption, "moves": _moves_caption, "appears": _appears_caption,
               "changes": _changes_caption}


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One true caption of a picture or clip."""
    return _CAPTIONERS[scene.event](scene, rng)


def captions(scene: Scene, rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` different true captions of a scene."""
    return distinct(lambda: caption(scene, rng), n)


# -- questions about pictures (VQAv2) -------------------------------------------
def question_type(question: str, types: Sequence[str]) -> str:
    """The longest of ``types`` that the question starts with (as VQAv2 types questions by their opening words)."""
    return max((t for t in types if question.startswith(t + " ")), key=len)


VQA_TYPES = ("what color is the", "which", "where is the", "what", "how many", "is there a", "is there", "is the")


def _ask(question: str, answer: str, answer_type: str) -> Question:
    return Question(question, answer, question_type(question, VQA_TYPES), answer_type)


def _yes_no(truth: bool) -> str:
    return "yes" if truth else "no"


def _about_one_thing(template: str, attribute: str) -> Callable[[Scene, np.random.Generator], Question]:
    """Questions about one thing, named by ``template`` (fields color, shape, place), answered by one attribute."""

    def ask(scene: Scene, rng: np.random.Generator) -> Question:
        t = _pick(rng, scene.things)
        question = template.format(color=t.color, shape=t.shape, place=PLACE_PHRASES[t.position][0])
        return _ask(question, getattr(t, attribute), "other")

    return ask


_color_of_shape = _about_one_thing("what color is the {shape}?", "color")
_shape_of_color = _about_one_thing("which shape is {color}?", "shape")
_place_of_thing = _about_one_thing("where is the {color} {shape}?", "position")
_shape_at_place = _about_one_thing("what shape is {place}?", "shape")


def _count(scene: Scene, rng: np.random.Generator) -> Question:
    return _ask("how many shapes are there?", str(len(scene.things)), "number")


def _count_of_size(scene: Scene, rng: np.random.Generator) -> Question:
    size = _pick(rng, ("small", "large"))
    return _ask(f"how many {size} shapes are there?", str(sum(t.size == size for t in scene.things)), "number")


def _has_thing(scene: Scene, rng: np.random.Generator) -> Question:
    """Half the time a thing that is there; otherwise one that differs from a real one in colour or shape."""
    present = {(t.color, t.shape) for t in scene.things}
    if rng.random() < 0.5:
        color, shape = _pick(rng, sorted(present))
    else:
        t = _pick(rng, scene.things)
        misses = [(c, t.shape) for c in COLORS] + [(t.color, s) for s in SHAPES]
        color, shape = _pick(rng, [m for m in misses if m not in present])
    return _ask(f"is there {with_article(f'{color} {shape}')}?", _yes_no((color, shape) in present), "yes/no")


def _has_color(scene: Scene, rng: np.random.Generator) -> Question:
    colors = {t.color for t in scene.things}
    pool = sorted(colors) if rng.random() < 0.5 else [c for c in COLORS if c not in colors]
    color = _pick(rng, pool)
    return _ask(f"is there {with_article(color)} shape?", _yes_no(color in colors), "yes/no")


def _has_shape(scene: Scene, rng: np.random.Generator) -> Question:
    shapes = {t.shape for t in scene.things}
    pool = sorted(shapes) if rng.random() < 0.5 else [s for s in SHAPES if s not in shapes]
    shape = _pick(rng, pool)
    return _ask(f"is there a {shape}?", _yes_no(shape in shapes), "yes/no")


def _is_color(scene: Scene, rng: np.random.Generator) -> Question:
    t = _pick(rng, scene.things)
    color = t.color if rng.random() < 0.5 else _pick(rng, [c for c in COLORS if c != t.color])
    return _ask(f"is the {t.shape} {color}?", _yes_no(color == t.color), "yes/no")


def _is_size(scene: Scene, rng: np.random.Generator) -> Question:
    t = _pick(rng, scene.things)
    size = _pick(rng, ("small", "large"))
    return _ask(f"is the {t.shape} {size}?", _yes_no(size == t.size), "yes/no")


IMAGE_QUESTIONS = (_color_of_shape, _shape_of_color, _place_of_thing, _shape_at_place, _count, _count_of_size,
                   _has_thing, _has_color, _has_shape, _is_color, _is_size)


# -- questions about clips (MSRVTT-QA: one-word answers) ------------------------
def _moves_questions(scene: Scene) -> list[tuple[str, str]]:
    mover, *rest = scene.things
    asked = [(f"which direction does the {mover.shape} move?", scene.direction),
             ("what color is the moving shape?", mover.color),
             ("what shape is moving?", mover.shape),
             (f"what happens to the {mover.shape}?", "moves")]
    return asked + [("what color is the shape that stays still?", t.color) for t in rest]


def _appears_questions(scene: Scene) -> list[tuple[str, str]]:
    first, last = scene.things[0], scene.things[-1]
    return [("what shape appears first?", first.shape),
            ("what shape appears last?", last.shape),
            ("what color is the shape that appears first?", first.color),
            ("how many shapes appear?", COUNT_WORDS[len(scene.things)]),
            (f"what happens to the {last.shape}?", "appears")]


def _changes_questions(scene: Scene) -> list[tuple[str, str]]:
    changer, *rest = scene.things
    asked = [(f"what color does the {changer.shape} turn?", changer.color_after),
             (f"what color is the {changer.shape} at first?", changer.color),
             ("what shape changes color?", changer.shape),
             (f"what happens to the {changer.shape}?", "changes")]
    return asked + [("what color is the shape that does not change?", t.color) for t in rest]


_CLIP_QUESTIONS = {"moves": _moves_questions, "appears": _appears_questions, "changes": _changes_questions}


def clip_questions(scene: Scene, rng: np.random.Generator, n: int = 4) -> list[Question]:
    """Up to ``n`` different questions about a clip, with one-word answers; ``question_type`` is the opening two words."""
    asked = _CLIP_QUESTIONS[scene.event](scene)
    chosen = [asked[int(i)] for i in rng.permutation(len(asked))[:n]]
    return [Question(q, a, " ".join(q.split()[:2]), "other") for q, a in chosen]


def image_questions(scene: Scene, rng: np.random.Generator, n: int = 5) -> list[Question]:
    """``n`` different questions about a picture, from ``n`` different templates chosen at random."""
    questions: list[Question] = []
    for i in rng.permutation(len(IMAGE_QUESTIONS)):
        q = IMAGE_QUESTIONS[int(i)](scene, rng)
        if all(q.question != other.question for other in questions):
            questions.append(q)
        if len(questions) == n:
            break
    return questions


# -- annotators -----------------------------------------------------------------
def annotate(answer: str, rng: np.random.Generator, annotators: int = 10) -> list[tuple[str, str]]:
    """Ten ``(answer, confidence)`` pairs: mostly the truth, sometimes a synonym or a neighbouring answer.

    At most :data:`MAX_DISSENT` annotators stray, so the truth stays the most common answer.
    Confidence is "yes", "maybe" or "no"; annotators who stray are less sure.
    """
    out: list[tuple[str, str]] = []
    dissent = 0
    for _ in range(annotators):
        r = rng.random()
        options = ANSWER_SYNONYMS.get(answer, ()) if r < SYNONYM_RATE else (
            ANSWER_NEIGHBOURS.get(answer, ()) if r < SYNONYM_RATE + NEIGHBOUR_RATE else ())
        if options and dissent < MAX_DISSENT:
            dissent += 1
            out.append((_pick(rng, options), _pick(rng, ("maybe", "maybe", "yes", "no"))))
        else:
            out.append((answer, "yes" if rng.random() < 0.85 else "maybe"))
    return out
