"""BLIP-2's stage 1 (Li et al., 2023): representation learning of a Q-Former with its text branch.

Three losses, each with its own self-attention mask over ``[queries; text]``
(:func:`vlreg.models.bridges.qformer_layers.joint_attention_mask`):

- ``itc``, image-text contrastive (unimodal mask, a query pass and a text pass), negatives from every rank;
- ``itm``, image-text matching with hard negatives drawn from ITC's similarities (bidirectional mask);
- ``itg``, image-grounded text generation (multimodal causal mask; the text attends to the keys and
  values the query pass already computed, as LAVIS does with its cache).

One query pass serves all three and the bridge's prompts (offered to the step, so an alignment
objective reuses it), and the images' cross-attention keys and values it makes serve ITM too.
The heads (``vision_proj``, ``text_proj``, ``itm_head``, ``lm_head``, ``temp``) are the Q-Former's
modules; this objective decides when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import distributed
from ..errors import ConfigError
from ..models.base import Features
from ..models.bridges.qformer import TEMPERATURE_RANGE
from ..models.losses import itc_loss, itm_loss, sample_hard_negatives
from ..registry import register
from .base import MEDIA, Objective, Step

if TYPE_CHECKING:
    from ..models.assembly import VisionLanguageModel
    from ..models.bridges.qformer import QFormer
    from ..models.bridges.qformer_layers import KeyValue


@register("objective", "blip2_stage1")
class Blip2Stage1(Objective):
    """BLIP-2 stage 1 on a Q-Former with its text branch: ITC, ITM with hard negatives, ITG.

    Args:
        itc, itm, itg: the weight of each loss (0: not computed). ITM draws its hard negatives
            from ITC's similarities, which are computed when either is.

    A batch's ``image_id`` (optional) makes captions of the same image ITC positives, never ITM
    negatives. The temperature is projected into [0.001, 0.5] in place first (as in LAVIS), so
    call backward before the next step.
    """

    needs = ("encoder", "bridge")
    batch_keys = (MEDIA, "text_input")
    loss_names = ("itc", "itm", "itg")
    offers_prompts = True

    def __init__(self, itc: float = 1.0, itm: float = 1.0, itg: float = 1.0):
        super().__init__()
        self.loss_weights = {"itc": itc, "itm": itm, "itg": itg}

    def check(self, model: "VisionLanguageModel") -> None:
        if not getattr(model.bridge, "text_branch", False):
            raise ConfigError(f"objective blip2_stage1 (itc, itm, itg) needs a Q-Former bridge with its text branch; "
                              f"{type(model.bridge).__name__} has none")

    def forward(self, step: Step) -> dict[str, Tensor]:
        bridge = step.model.bridge
        losses, query_states = self.losses(bridge, step.features(), step.texts, step.image_ids())
        step.offer_prompts(lambda: bridge.project(query_states))
        return losses

    def losses(self, qformer: "QFormer", features: Features, texts: Sequence[str],
               image_ids: Optional[Tensor] = None) -> tuple[dict[str, Tensor], Tensor]:
        """The active losses for image ``b`` paired with ``texts[b]``, and the query states ``[B, Q, H]``.

        Args:
            qformer: a Q-Former with its text branch.
            features: visual tokens ``[B, N, Dv]`` (mask ``[B, N]`` optional).
            texts: ``B`` captions, tokenised once.
            image_ids: ``[B]`` optional; pairs of the same image are positives.
        """
        active = self.active()
        input_ids, text_mask = qformer.tokenize(texts)
        keys = qformer.cross_keys(features)  # the images' keys and values, for the query pass and ITM
        query_states, cache = qformer.encode(features, cross_keys=keys)
        losses: dict[str, Tensor] = {}
        if "itc" in active or "itm" in active:  # ITM draws its hard negatives from ITC's similarities
            with torch.no_grad():
                qformer.temp.clamp_(*TEMPERATURE_RANGE)
            image_feats = F.normalize(qformer.vision_proj(query_states), dim=-1)
            text_feats = qformer.text_embeds(input_ids, text_mask)
            loss, sim_i2t, sim_t2i = itc_loss(image_feats, text_feats, qformer.temp, image_ids)
            if "itc" in active:
                losses["itc"] = loss
            if "itm" in active:
                losses["itm"] = matching_loss(qformer, features, input_ids, text_mask, sim_i2t, sim_t2i, image_ids,
                                              keys)
        if "itg" in active:
            losses["itg"] = generation_loss(qformer, features, input_ids, text_mask, cache)
        return losses, query_states


def matching_loss(qformer: "QFormer", features: Features, input_ids: Tensor, text_mask: Tensor, sim_i2t: Tensor,
                  sim_t2i: Tensor, image_ids: Optional[Tensor], keys: list[Optional["KeyValue"]]) -> Tensor:
    """ITM over the positives, each text with a hard-negative image and each image with a hard-negative text.

    ``input_ids``, ``text_mask``: ``[B, T]``; ``sim_i2t``, ``sim_t2i``: ``[B, B * world]`` from ITC;
    ``keys``: the query pass's :meth:`~QFormer.cross_keys` of this rank's images; in one process they
    are all the images ITM reads, and are reused.
    """
    if distributed.world_size() > 1:  # ranks pad differently: pad all to one length before gathering
        input_ids, text_mask = _pad(input_ids, text_mask, qformer.max_text_length, qformer.tokenizer.pad_token_id)
    all_ids, all_text_mask = distributed.all_gather(input_ids), distributed.all_gather(text_mask)
    all_tokens = distributed.all_gather(features.tokens, with_grad=True)
    all_visual_mask = None if features.mask is None else distributed.all_gather(features.mask)
    negative_text, negative_image = sample_hard_negatives(sim_i2t, sim_t2i, image_ids)
    has_image, has_text = negative_image >= 0, negative_text >= 0
    own = torch.arange(input_ids.shape[0], device=input_ids.device) + distributed.rank() * input_ids.shape[0]
    # positives, each text with a negative image, each image with a negative text: rows of the
    # gathered images, whose cross-attention keys and values are computed once per image
    rows = torch.cat([own, negative_image[has_image], own[has_text]])
    ids = torch.cat([input_ids, input_ids[has_image], all_ids[negative_text[has_text]]])
    mask = torch.cat([text_mask, text_mask[has_image], all_text_mask[negative_text[has_text]]])
    shared = keys if distributed.world_size() == 1 else None
    logits = qformer.itm_logits(Features(all_tokens, all_visual_mask), ids, mask, visual_rows=rows, cross_keys=shared)
    batch = input_ids.shape[0]
    return itm_loss(logits[:batch], logits[batch:])


def generation_loss(qformer: "QFormer", features: Features, input_ids: Tensor, text_mask: Tensor,
                    cache: list["KeyValue"]) -> Tensor:
    """ITG: caption the image from the query pass's ``cache``; ``[DEC]`` replaces ``[CLS]``; cross-entropy with
    label smoothing 0.1 (a scalar). ``input_ids``, ``text_mask``: ``[B, T]``."""
    decoder_ids = input_ids.clone()
    decoder_ids[:, 0] = qformer.tokenizer.bos_token_id
    logits = qformer.itg_logits(features, decoder_ids, text_mask, cache)
    labels = decoder_ids.masked_fill(~text_mask, -100)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100,
                           label_smoothing=0.1)


def _pad(input_ids: Tensor, mask: Tensor, length: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad ``[B, T]`` ids and mask to ``[B, length]``."""
    extra = length - input_ids.shape[1]
    return F.pad(input_ids, (0, extra), value=pad_id), F.pad(mask, (0, extra), value=False)
