"""Text processors: raw captions and questions to the strings models see.

Both follow the cleaning of BLIP/BLIP-2 (LAVIS's caption and question processors),
so that scores stay comparable with published ones: lowercase, the characters
``. ! " ( ) * # : ; ~`` removed, runs of whitespace collapsed, at most ``max_words``
words. Commas, apostrophes, question marks and hyphens are kept.
"""

from __future__ import annotations

import re

from ...errors import ConfigError
from ...registry import register

_DROPPED = re.compile(r'[.!"()*#:;~]')
_SPACES = re.compile(r"\s+")


def clean_text(text: str, max_words: int, dropped_by: str = " ") -> str:
    """Lowercase, replace dropped characters with ``dropped_by``, collapse spaces, keep ``max_words`` words."""
    text = _DROPPED.sub(dropped_by, text.lower())
    words = _SPACES.sub(" ", text).strip().split(" ")
    return " ".join(words[:max_words])


@register("processor", "caption")
class CaptionProcessor:
    """Caption cleaning as BLIP-2 does it: "A Dog, running!" -> "a dog, running".

    Punctuation among ``. ! " ( ) * # : ; ~`` becomes a space, then whitespace is
    collapsed, the caption lowercased and cut to ``max_words`` words; ``prompt`` is
    prepended to the result (e.g. "a photo of ").

    Args:
        max_words: the most words kept.
        prompt: text placed before every caption, as given (not cleaned).
    """

    def __init__(self, max_words: int = 50, prompt: str = ""):
        if max_words < 1:
            raise ConfigError(f"caption: max_words must be positive, got {max_words}")
        self.max_words, self.prompt = max_words, prompt

    def __call__(self, text: str) -> str:
        return self.prompt + clean_text(text, self.max_words)


@register("processor", "question")
class QuestionProcessor:
    """Question formatting: "What color is the Ball?" -> "Question: what color is the ball? Short answer:".

    The question is lowercased, ``. ! " ( ) * # : ; ~`` are deleted (not replaced:
    "what's" and "t-shirt" survive), whitespace is collapsed and at most ``max_words``
    words are kept; the result is placed into ``template`` at ``{}``.

    Args:
        max_words: the most words kept.
        template: a format string with one ``{}``, e.g. "Question: {} Short answer:".
    """

    def __init__(self, max_words: int = 50, template: str = "{}"):
        if max_words < 1:
            raise ConfigError(f"question: max_words must be positive, got {max_words}")
        if template.count("{}") != 1:
            raise ConfigError(f"question: template must contain one '{{}}', got {template!r}")
        self.max_words, self.template = max_words, template

    def __call__(self, text: str) -> str:
        return self.template.format(clean_text(text, self.max_words, dropped_by=""))
