"""Stage 0 of P-Former: learn prompts from text alone, evaluated by reconstruction from the prompts.

The model is a :class:`~vlreg.models.assembly.VisionLanguageModel` with a trainable
``prompter`` and a frozen ``llm``, trained on sentences with the objective ``pformer_stage0``
(losses ``reconstruction``, ``contrastive`` and ``vocabulary``; the paper's weights, 1 each, when
the model node sets no ``losses``). Training is the base task's step.

Evaluation on held-out sentences (a sentence corpus, split ``val``):

- ``reconstruction_loss``: the mean cross-entropy per target token of ``llm.loss(prompts, texts)``;
- the frozen LLM decodes greedily from the P-Former's prompts ALONE (no text), and the
  result is compared with the sentence (see :func:`reconstruction_scores`):
  ``token_accuracy``, ``exact_match`` and ``unigram_token_accuracy``, the accuracy of always
  predicting the most frequent token, so that the gap between the two is visible.

The reconstructions are written as ``predictions/reconstruction_step<N>.json``
(``[{"text", "reconstruction"}]``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional, Sequence

from ..errors import ConfigError
from ..registry import register
from .base import Task
from .lm_pretrain import summed_nll, text_batches

@register("task", "pformer_pretrain")
class PFormerPretraining(Task):
    """P-Former stage 0: prompter + frozen LLM on sentences; evaluated by reconstruction from prompts alone.

    The ``model:`` node needs a ``prompter`` and an ``llm``; without ``losses`` it trains
    ``[{name: pformer_stage0}]`` (the paper's weights, 1 each).

    Args:
        max_new_tokens: the most tokens decoded per sentence (default: the LLM's ``max_text_length``).
    """

    objectives = ({"name": "pformer_stage0"},)

    def __init__(self, max_new_tokens: Optional[int] = None):
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ConfigError(f"pformer_pretrain: max_new_tokens must be at least 1, got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens

    def evaluate(self, model: Any, dataset: Any, context: Any) -> dict[str, float]:
        llm = model.llm
        max_new_tokens = self.max_new_tokens or llm.max_text_length
        rows, total, count = [], 0.0, 0
        for texts in text_batches(dataset, context):
            with context.autocast():
                prompts = model.prompter(texts)
                nll, tokens = summed_nll(llm, prompts, texts)
                generated = llm.generate_tokens(prompts, None, max_new_tokens=max_new_tokens, num_beams=1)
            references = reference_tokens(llm, texts)
            eos = llm.tokenizer.eos_token_id
            rows += [(text, reference, until(row, eos)) for text, reference, row in
                     zip(texts, references, generated.tolist())]
            total, count = total + nll, count + tokens
        rows = context.gather(rows)
        total, count = (sum(part) for part in zip(*context.gather([(total, count)])))
        decode = llm.tokenizer.decode
        self.write_predictions(context, "reconstruction", [
            {"text": text, "reconstruction": decode(tokens, skip_special_tokens=True).strip()}
            for text, _, tokens in rows])
        scores = reconstruction_scores([r[1] for r in rows], [r[2] for r in rows])
        return {"reconstruction_loss": total / max(count, 1), **scores, "sentences": len(rows)}

    def metric_names(self) -> list[str]:
        return ["reconstruction_loss", "token_accuracy", "exact_match", "unigram_token_accuracy", "sentences"]


def reference_tokens(llm: Any, texts: Sequence[str]) -> list[list[int]]:
    """The tokens the LLM is trained to produce for each text after the prompts: its target encoding, without eos."""
    after_context = [bool(llm.prompt) and llm.continues_context] * len(texts)
    return [row[:-1] for row in llm.encode_targets(texts, after_context)]


def until(tokens: Sequence[int], eos: int) -> list[int]:
    """``tokens`` up to (without) the first ``eos``: a generated row without its end and padding."""
    tokens = list(tokens)
    return tokens[:tokens.index(eos)] if eos in tokens else tokens


def reconstruction_scores(references: Sequence[Sequence[int]], generated: Sequence[Sequence[int]]) -> dict[str, float]:
    """Position-wise token accuracy, exact match and the unigram baseline of generated token rows.

    For each sentence, ``r`` is its reference tokens (the LLM tokenizer's target encoding,
    without eos) and ``g`` the generated tokens up to the first eos. Then

    - ``token_accuracy`` = sum over sentences of ``#{i < |r| : i < |g| and g[i] == r[i]}``,
      divided by the sum of ``|r|`` (a micro-average: positions the generation does not
      reach count as wrong; tokens generated beyond ``|r|`` do not count);
    - ``exact_match`` = the share of sentences with ``g == r``;
    - ``unigram_token_accuracy`` = the same accuracy for a constant guess, the most frequent
      token among all references (the best constant guess in hindsight): its share of
      all reference tokens.
    """
    positions = sum(len(r) for r in references)
    if positions == 0:
        return {"token_accuracy": 0.0, "exact_match": 0.0, "unigram_token_accuracy": 0.0}
    correct = sum(sum(a == b for a, b in zip(r, g)) for r, g in zip(references, generated))
    exact = sum(list(r) == list(g) for r, g in zip(references, generated))
    most_common = Counter(token for r in references for token in r).most_common(1)[0][1]
    return {"token_accuracy": correct / positions, "exact_match": exact / len(references),
            "unigram_token_accuracy": most_common / positions}
