"""``seq2seq_lm``: a frozen encoder-decoder LLM (T5 / FlanT5, or any ``AutoModelForSeq2SeqLM``) after soft prompts."""

from __future__ import annotations

from typing import ClassVar, Optional, Sequence

import torch
from torch import Tensor

from ...registry import register
from ..base import Prompts
from .common import ARGUMENTS, IGNORE, TextLogits, TransformersLM, join_text, pad, per_sample


def split_at_word(text: str, draw: float) -> tuple[str, str]:
    """Split ``text`` before word ``k = floor(draw * n)`` of its ``n`` words: ``(prefix, suffix)``.

    ``draw`` in ``[0, 1)`` makes ``k`` uniform over ``0 .. n-1``: the prefix may be empty,
    the suffix holds at least one word (unless the text has none). Words are separated
    by whitespace and rejoined with one space.
    """
    words = text.split()
    k = min(int(draw * len(words)), max(len(words) - 1, 0))
    return " ".join(words[:k]), " ".join(words[k:])


@register("llm", "seq2seq_lm")
class Seq2SeqLM(TransformersLM):
    __doc__ = """A frozen encoder-decoder LLM (T5 / FlanT5, or any ``AutoModelForSeq2SeqLM``) that reads soft prompts first.

    Prefix language modelling: the encoder reads ``[prompts; context]`` (the context with
    the tokenizer's special tokens: T5 appends eos) and the decoder predicts the target
    then eos. With a text_output, the context is ``prompt + text_input`` and the target
    is the text_output. Without one, each text_input is split at a word boundary drawn
    uniformly per sample (see :meth:`forward`): the prefix joins the context, the suffix
    is the target.
    """ + ARGUMENTS

    auto_class: ClassVar[str] = "AutoModelForSeq2SeqLM"
    is_encoder_decoder: ClassVar[bool] = True
    continues_context: ClassVar[bool] = False

    def forward(self, prompts: Prompts, text_input: Sequence[str], text_output: Sequence[Optional[str]] | None = None,
                generator: torch.Generator | None = None) -> TextLogits:
        """Decoder logits ``[B, T, V]`` and their targets (target tokens then eos, -100 on padding).

        Per sample, with a text_output the encoder reads ``[prompts; prompt + text_input]``
        and the decoder predicts the text_output. Without one (``text_output`` None, or None
        for that sample) the text_input is split by :func:`split_at_word` with a draw from
        ``torch.rand(B, generator=generator)`` (the global RNG when ``generator`` is None;
        one draw per sample, used or not, so a seeded generator makes the split of a batch
        reproducible): the encoder reads ``[prompts; prompt + prefix]``, the decoder
        predicts the suffix.
        """
        draws = torch.rand(len(text_input), generator=generator).tolist()
        contexts, targets = [], []
        for text, output, draw in zip(text_input, per_sample(text_output, len(text_input)), draws):
            if output is None:
                text, output = split_at_word(text, draw)
            contexts.append(join_text(self.prompt, text))
            targets.append(output)
        hidden, mask = self.encode(prompts, contexts)
        labels, _ = pad(self.encode_targets(targets), IGNORE)
        return self.decode(hidden, mask, labels)

    def encode(self, prompts: Prompts, contexts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Encoder states of ``[prompts; context]``: ``[B, Q+S, d_model]``, and the mask ``[B, Q+S]`` bool."""
        embeds, mask = self.prompted_contexts(prompts, contexts)
        return self.model.get_encoder()(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state, mask

    def decode(self, hidden: Tensor, mask: Tensor, labels: Tensor) -> TextLogits:
        """Teacher-forced decoder logits for ``labels`` ``[N, T]`` (-100 on padding) given encoder states ``[N, S, d]``."""
        from transformers.modeling_outputs import BaseModelOutput

        labels = labels.to(hidden.device)
        logits = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
            attention_mask=mask.long(),
            decoder_input_ids=self.model.prepare_decoder_input_ids_from_labels(labels=labels),
            decoder_attention_mask=(labels != IGNORE).long(),
        ).logits
        return TextLogits(logits.float(), labels)

    def score(self, prompts: Prompts, text_input: Sequence[str], candidates: Sequence[str]) -> Tensor:
        """Log-likelihood of each candidate (its tokens and eos) as the decoder output for ``[prompts; prompt + text_input]``: ``[B, C]``.

        The encoder runs once per sample; its states are repeated over the C candidates,
        which the decoder scores as one ``[B*C, L]`` batch.
        """
        count = len(candidates)
        hidden, mask = self.encode(prompts, [join_text(self.prompt, text) for text in text_input])
        labels, _ = pad(self.encode_targets(candidates), IGNORE)
        scored = self.decode(hidden.repeat_interleave(count, 0), mask.repeat_interleave(count, 0),
                             labels.repeat(len(text_input), 1))
        return scored.log_likelihood().view(len(text_input), count)

    def new_tokens(self, generated: Tensor) -> Tensor:
        """Drops the decoder start token that ``generate()`` puts first."""
        return generated[:, 1:]
