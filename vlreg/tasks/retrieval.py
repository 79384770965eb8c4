"""Retrieval: train with the model's objectives (BLIP-2: ``blip2_stage1``); evaluate with ITC then ITM re-ranking of the top k.

Media are encoded once, sharded over ranks; every rank then holds all visual tokens
and ITC embeddings and re-ranks its share of the rows (media for text retrieval,
texts for media retrieval). Rankings are written as ``{"i2t": [[text indices of the
best k]], "t2i": [[media indices]]}`` and scored with recall at 1, 5, 10, median and
mean rank in both directions (BLIP's ``txt_*`` / ``img_*`` names).
"""

from __future__ import annotations

from typing import Any

import torch

from ..distributed import broadcast_object
from ..errors import DataError
from ..models.base import Features
from ..models.retrieval import query_similarity_matrix, require_matching_heads, rerank, text_embeddings
from ..registry import register
from .base import Task, count_skipped, eval_batches


@register("task", "retrieval")
class RetrievalTask(Task):
    """Image-text or video-text retrieval with a Q-Former (COCO, MSRVTT 1k-A).

    Args:
        k: candidates re-ranked by the ITM head per query (BLIP-2 uses 128).
        rerank_batch_size: pairs per ITM forward pass.
    """

    def __init__(self, k: int = 128, rerank_batch_size: int = 128):
        self.k, self.rerank_batch_size = k, rerank_batch_size

    def evaluate(self, model: Any, dataset: Any, context: Any) -> dict[str, float]:
        from ..metrics.retrieval import retrieval_recall

        bridge = model.bridge
        require_matching_heads(bridge)
        local, bad = [], []
        for batch, skipped in eval_batches(model, dataset, context):
            bad += skipped
            if batch is None:
                continue
            with context.autocast():
                features = model.visual_tokens(batch)
                embeds = bridge.image_embeds(features)
            for j, index in enumerate(batch["index"]):
                mask = None if features.mask is None else features.mask[j].cpu()
                local.append((index, features.tokens[j].float().cpu(), mask, embeds[j].float().cpu()))
        skipped = count_skipped(context, bad, len(local))
        items = sorted(context.gather(local), key=lambda item: item[0])
        if skipped:
            raise DataError(f"retrieval ranks every media item against every text: {skipped} media files could "
                            f"not be read; see the bad-media report, fix or remove them")
        device = context.device
        tokens = torch.stack([item[1] for item in items]).to(device)
        mask = None if items[0][2] is None else torch.stack([item[2] for item in items]).to(device)
        features = Features(tokens, mask)
        image_embeds = torch.stack([item[3] for item in items]).to(device)
        texts = dataset.texts
        with context.autocast():
            sim = query_similarity_matrix(image_embeds, text_embeddings(bridge, texts).float())
            share = lambda n: list(range(context.rank, n, context.world_size))  # noqa: E731
            i2t_rows, t2i_rows = share(len(items)), share(len(texts))
            i2t = rerank(bridge, features, texts, sim, i2t_rows, self.k, "i2t", self.rerank_batch_size)
            t2i = rerank(bridge, features, texts, sim, t2i_rows, self.k, "t2i", self.rerank_batch_size)
        score_i2t = _assemble(context.gather(list(zip(i2t_rows, i2t.cpu()))), len(items))
        score_t2i = _assemble(context.gather(list(zip(t2i_rows, t2i.cpu()))), len(texts))
        k = min(self.k, 10)
        self.write_predictions(context, "retrieval", {
            "i2t": score_i2t.topk(min(k, score_i2t.shape[1]), dim=1).indices.tolist(),
            "t2i": score_t2i.topk(min(k, score_t2i.shape[1]), dim=1).indices.tolist(),
        })
        metrics: dict[str, float] = {}
        if context.is_main:
            text_side = retrieval_recall(score_i2t, dataset.txt2media, dataset.media2txt)
            media_side = retrieval_recall(score_t2i.t(), dataset.txt2media, dataset.media2txt)
            metrics = {k: v for k, v in text_side.items() if k.startswith("txt_")}
            metrics.update({k: v for k, v in media_side.items() if k.startswith("img_")})
            metrics["r_mean"] = (metrics["txt_r_mean"] + metrics["img_r_mean"]) / 2
            metrics["itc_txt_r1"] = retrieval_recall(sim.cpu(), dataset.txt2media, dataset.media2txt)["txt_r1"]
        metrics = broadcast_object(metrics)
        metrics["skipped_media"] = skipped
        return metrics

    def metric_names(self) -> list[str]:
        sides = [f"{side}_{name}" for side in ("txt", "img") for name in ("r1", "r5", "r10", "r_mean", "medr", "meanr")]
        return [*sides, "r_mean", "itc_txt_r1", "skipped_media"]


def _assemble(rows: list[tuple[int, torch.Tensor]], n: int) -> torch.Tensor:
    ordered = sorted(rows, key=lambda r: r[0])
    assert [r[0] for r in ordered] == list(range(n))
    return torch.stack([r[1] for r in ordered])


@register("task", "pretrain_stage1")
class Stage1Pretraining(RetrievalTask):
    """BLIP-2 stage 1: representation learning (objective ``blip2_stage1``: ITC, ITM with hard negatives,
    ITG), evaluated by retrieval.

    The model's ``losses`` must list ``blip2_stage1`` and may add others (``pformer_alignment``);
    without ``losses`` it trains ``[{name: blip2_stage1}]``. Arguments as for ``retrieval``.
    """

    objectives = ({"name": "blip2_stage1"},)
