"""Benchmark 1b: captioning throughput, vlreg against transformers' BLIP-2, greedy and 5-beam.

Both caption the same batch of images from scratch (vision, Q-Former, the LLM's decoding),
under the pair's autocast (none in fp32, bf16 at paper scale), and return text:

- vlreg: ``model.generate({"image": images}, ...)``;
- transformers: ``Blip2ForConditionalGeneration.generate(pixel_values, ...)`` (its own image
  tokens and ``</s>``), then the tokenizer's ``batch_decode`` of the new tokens.

The captions of every round must be equal, and so must the token ids of one extra call
(:func:`same_tokens`), for a timing to count.
"""

from __future__ import annotations

from typing import Any

import torch

from .pairs import Pair
from .results import Row, compared
from .timing import alternate


def options(num_beams: int, max_new_tokens: int) -> dict[str, Any]:
    return dict(max_new_tokens=max_new_tokens, num_beams=num_beams, min_new_tokens=0, length_penalty=1.0)


def vlreg_captions(pair: Pair, num_beams: int, max_new_tokens: int):
    model = pair.vlreg.eval()
    batch = {"image": pair.images}

    def captions() -> list[str]:
        with pair.autocast():
            return model.generate(batch, **options(num_beams, max_new_tokens))

    return captions


def transformers_captions(pair: Pair, num_beams: int, max_new_tokens: int):
    hf, tokenizer = pair.transformers.eval(), pair.vlreg.llm.tokenizer
    settings = dict(options(num_beams, max_new_tokens), do_sample=False, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id)
    prefix = pair.vlreg.bridge.num_queries + 1  # generate() returns its image tokens and </s> first

    def captions() -> list[str]:
        with pair.autocast():
            tokens = hf.generate(pixel_values=pair.images, **settings)
        return [text.strip() for text in tokenizer.batch_decode(tokens[:, prefix:], skip_special_tokens=True)]

    return captions


@torch.no_grad()
def same_tokens(pair: Pair, num_beams: int, max_new_tokens: int) -> tuple[bool, int]:
    """Whether both produce the same new token ids, and how many tokens that is."""
    model, hf, tokenizer = pair.vlreg, pair.transformers, pair.vlreg.llm.tokenizer
    with pair.autocast():
        prompts = model.prompts(model.visual_tokens({"image": pair.images}))
        ours = model.llm.generate_tokens(prompts, None, **options(num_beams, max_new_tokens))
        theirs = hf.generate(pixel_values=pair.images, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, **options(num_beams, max_new_tokens))
    theirs = theirs[:, model.bridge.num_queries + 1:]
    return ours.shape == theirs.shape and torch.equal(ours, theirs), int((theirs != tokenizer.pad_token_id).sum())


def run(pair: Pair, num_beams: int, max_new_tokens: int, repeats: int, target: float = 1.0) -> Row:
    """Time both alternately; every round's captions and one call's token ids must be equal; ``target``: the
    speedup to reach."""
    mismatches = []

    def check(round_: int, ours: list[str], theirs: list[str]) -> None:
        if ours != theirs:
            mismatches.append(round_)

    with torch.no_grad():
        ours, theirs = alternate(vlreg_captions(pair, num_beams, max_new_tokens),
                                 transformers_captions(pair, num_beams, max_new_tokens), repeats, warmup=1,
                                 on_result=check, device=pair.device)
    equal, count = same_tokens(pair, num_beams, max_new_tokens)
    ok = equal and not mismatches
    check_text = (f"tokens equal ({count} new tokens)" if ok else
                  f"tokens differ; captions differ in rounds {mismatches}")
    method = "greedy" if num_beams == 1 else f"{num_beams} beams"
    return compared("generation", f"{pair.scale}, {pair.precision}, {method}, {max_new_tokens} tokens, "
                    f"batch {len(pair.texts)}", ours, theirs, check_text, ok, target=target)
