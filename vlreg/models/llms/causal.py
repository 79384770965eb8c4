"""``causal_lm``: a frozen decoder-only LLM (OPT, or any ``AutoModelForCausalLM``) after soft prompts."""

from __future__ import annotations

import functools
import inspect
from typing import Any, ClassVar, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ...registry import register
from ..base import Prompts
from .common import ARGUMENTS, IGNORE, TextLogits, TransformersLM, join_text, pad, per_sample, position_ids
from .packing import pack, packed_plan


@functools.lru_cache(maxsize=None)
def cache_name(model_class: type) -> str:
    """What a transformers model class calls its key/value cache, as an argument of ``forward()`` and
    ``generate()`` and as a field of its outputs: ``cache`` from transformers 5.24, which deprecates the
    older ``past_key_values``; ``past_key_values`` where ``forward()`` takes no ``cache``."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


@register("llm", "causal_lm")
class CausalLM(TransformersLM):
    __doc__ = """A frozen decoder-only LLM (OPT, or any ``AutoModelForCausalLM``) that reads soft prompts first.

    One sequence per sample, prompts first: ``[prompts; bos + context + target + eos]``,
    where the context is ``prompt`` (and, with a text_output, ``prompt + text_input``)
    and the target is ``text_input`` (or the text_output). The loss scores the target and
    eos only. Text is right-padded; the attention mask covers the prompts (their mask)
    and the real text, and position ids count real tokens only (as OPT derives them from
    the attention mask, and as ``generate()`` does), so positions agree between training
    and generation. Generation left-pads the context so that new tokens follow it.
    """ + ARGUMENTS

    auto_class: ClassVar[str] = "AutoModelForCausalLM"
    continues_context: ClassVar[bool] = True

    def forward(self, prompts: Prompts, text_input: Sequence[str],
                text_output: Sequence[Optional[str]] | None = None) -> TextLogits:
        """Logits over ``[prompts; bos + context + target + eos]`` and what each position predicts.

        Per sample: without a text_output, the context is ``prompt`` and the target is
        ``text_input`` (captioning; P-Former reconstruction); with one, the context is
        ``prompt + text_input`` and the target is the text_output (VQA). ``text_output``
        may hold None for single samples. Returns ``TextLogits`` ``[B, Q+T, V]``: position
        ``s`` is scored against token ``s+1`` where that token is a target token or eos,
        and not at all on prompts, bos, context and padding.
        """
        embeds, mask, next_tokens = self.sequences(prompts, text_input, text_output)
        logits = self.model(inputs_embeds=embeds, attention_mask=mask.long(), position_ids=position_ids(mask)).logits
        return TextLogits(logits.float(), next_tokens.to(logits.device))

    def loss(self, prompts: Prompts, text_input: Sequence[str],
             text_output: Sequence[Optional[str]] | None = None) -> Tensor:
        """Mean cross-entropy of the target tokens: ``forward(...).cross_entropy()``, computed with less work.

        - The output head runs only at the K scored positions (transformers' ``logits_to_keep``
          with a boolean mask), giving logits ``[K, V]`` instead of ``[B, Q+T, V]``: the prompts,
          the context and the padding never meet the vocabulary, forward or backward.
        - Where it saves work on this device's attention kernel, the sequences are packed into
          fewer rows without their padding (:mod:`vlreg.models.llms.packing`).
        """
        embeds, mask, next_tokens = self.sequences(prompts, text_input, text_output)
        next_tokens = next_tokens.to(embeds.device)
        plan = packed_plan(self.model.config, mask)
        if plan is None:
            attention, positions = mask.long(), position_ids(mask)
        else:
            packed = pack(embeds, mask, position_ids(mask), next_tokens, plan)
            embeds, attention, positions, next_tokens = packed.embeds, packed.attention, packed.positions, packed.targets
        scored = next_tokens != IGNORE
        logits = self.model(inputs_embeds=embeds, attention_mask=attention, position_ids=positions,
                            logits_to_keep=scored).logits
        return F.cross_entropy(logits.float(), next_tokens[scored])

    def sequences(self, prompts: Prompts, text_input: Sequence[str],
                  text_output: Sequence[Optional[str]] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """What :meth:`forward` runs the model on: embeds ``[B, Q+T, width]``, mask ``[B, Q+T]`` bool,
        and the next-token targets ``[B, Q+T]`` long (``IGNORE`` where nothing is scored)."""
        contexts, targets = [], []
        for text, output in zip(text_input, per_sample(text_output, len(text_input))):
            contexts.append(self.prompt if output is None else join_text(self.prompt, text))
            targets.append(text if output is None else output)
        context_ids = self.encode_contexts(contexts)
        target_ids = self.encode_targets(targets, [bool(context) for context in contexts])
        ids, text_mask = pad([c + t for c, t in zip(context_ids, target_ids)], self.pad_token_id)
        scored, _ = pad([[IGNORE] * len(c) + t for c, t in zip(context_ids, target_ids)], IGNORE)
        embeds, mask = self.prepend_prompts(prompts, ids, text_mask)
        num_prompts = prompts.embeds.shape[1]
        labels = torch.cat([torch.full((len(contexts), num_prompts), IGNORE), scored], dim=1)
        next_tokens = torch.cat([labels[:, 1:], torch.full((len(contexts), 1), IGNORE)], dim=1)
        return embeds, mask, next_tokens

    def shared_prefix(self, embeds: Tensor, mask: Tensor, copies: int) -> dict[str, Any]:
        """The key/value cache of all but the last position of ``[prompts; context]`` ``[B, L, width]``,
        computed once per sample and repeated ``copies`` times, as ``generate()``'s cache argument
        (:func:`cache_name`).

        ``generate()`` repeats its inputs once per beam before running them, so beam search with
        k beams would run the prompts and the context k times over identical rows; with the cache
        it runs only the last position of each row, then decodes as before (same tokens).
        """
        if copies < 2 or embeds.shape[1] < 2:
            return {}
        head = mask[:, :-1]
        prefix = self.model(inputs_embeds=embeds[:, :-1], attention_mask=head.long(), position_ids=position_ids(head),
                            use_cache=True, logits_to_keep=1)
        name = cache_name(type(self.model))
        cache = getattr(prefix, name)
        cache.batch_repeat_interleave(copies)
        return {name: cache}

    def score(self, prompts: Prompts, text_input: Sequence[str], candidates: Sequence[str]) -> Tensor:
        """Log-likelihood of each candidate (its tokens and eos) continuing ``[prompts; bos + prompt + text_input]``: ``[B, C]``.

        The prefix runs once with ``use_cache``; its key/value cache is repeated over
        the C candidates, which then run as a ``[B*C, L]`` batch on top of it. The
        values equal ``-`` the summed token cross-entropy of ``forward`` with the
        candidate as text_output.
        """
        batch, count = len(text_input), len(candidates)
        contexts = [join_text(self.prompt, text) for text in text_input]
        embeds, mask = self.prompted_contexts(prompts, contexts)
        prefix = self.model(inputs_embeds=embeds, attention_mask=mask.long(), position_ids=position_ids(mask),
                            use_cache=True, logits_to_keep=1)
        name = cache_name(type(self.model))
        cache = getattr(prefix, name)
        cache.batch_repeat_interleave(count)
        encoded = {flag: self.encode_targets(candidates, [flag] * count) for flag in {bool(c) for c in contexts}}
        rows = [row for context in contexts for row in encoded[bool(context)]]
        ids, candidate_mask = pad(rows, self.pad_token_id)
        targets, _ = pad(rows, IGNORE)
        full_mask = torch.cat([mask.repeat_interleave(count, 0), candidate_mask.to(mask.device)], dim=1)
        continued = self.model(input_ids=ids.to(mask.device), attention_mask=full_mask.long(), **{name: cache},
                               position_ids=position_ids(full_mask)[:, mask.shape[1]:])
        logits = torch.cat([prefix.logits[:, -1:].repeat_interleave(count, 0), continued.logits[:, :-1]], dim=1)
        return TextLogits(logits.float(), targets.to(logits.device)).log_likelihood().view(batch, count)
