"""Pretraining a frame encoder without captions: multi-label scene attributes.

Real BLIP-2 starts from an image encoder pretrained elsewhere (EVA-CLIP); the
synthetic world needs its own. This task trains any registered encoder (unfrozen)
with a small attention-pooling head to predict the world's multi-hot attributes
(colours, shapes, counts, positions; for videos also events and motion
directions, which the head can read from frame order through the video encoder's
temporal embedding). :meth:`AttributePretraining.export` then writes the frame
encoder's weights as a file that ``timm_vit``'s ``checkpoint`` argument loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..build import build, component
from ..distributed import broadcast_object
from ..errors import ConfigError
from ..io.run_dir import RunDir
from ..io.weights import write_weights
from ..models.base import Encoder
from ..registry import register
from ..tasks.base import Task, eval_batches


class AttributeClassifier(nn.Module):
    """An encoder and an attention-pooling head: media -> attribute logits ``[B, A]``.

    ``num_heads`` learned queries attend over the tokens; their outputs, concatenated,
    go through a two-layer MLP. Several queries let the head compare parts of the
    input (early and late frames), which one mean cannot.
    """

    def __init__(self, encoder: Encoder, num_attributes: int, num_queries: int = 4):
        super().__init__()
        self.encoder = encoder
        width = encoder.width
        self.queries = nn.Parameter(torch.randn(num_queries, width) * 0.02)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Sequential(nn.Linear(num_queries * width, width), nn.GELU(), nn.Linear(width, num_attributes))

    def forward(self, media: Tensor) -> Tensor:
        tokens = self.norm(self.encoder(media).tokens)  # [B, N, D]
        weights = torch.einsum("qd,bnd->bqn", self.queries, tokens) / tokens.shape[-1] ** 0.5
        pooled = torch.einsum("bqn,bnd->bqd", weights.softmax(dim=-1), tokens)
        return self.head(pooled.flatten(1))


@register("task", "attribute_pretrain")
class AttributePretraining(Task):
    """Train an encoder on multi-hot scene attributes (binary cross-entropy); evaluate per-attribute accuracy.

    Args:
        num_attributes: the length of the label vectors (the world's attribute count).
        num_queries: the attention-pooling head's queries.
        export_component: the path, within the encoder, of the module to export
            (``frame_encoder`` for a video encoder; ``""`` for the encoder itself).
    """

    def __init__(self, num_attributes: int, num_queries: int = 4, export_component: str = ""):
        self.num_attributes, self.num_queries, self.export_component = num_attributes, num_queries, export_component

    def build_model(self, node: Optional[Mapping[str, Any]]) -> nn.Module:
        encoder = build("encoder", (node or {}).get("encoder"), "model.encoder")
        if encoder.frozen:
            raise ConfigError("attribute_pretrain trains its encoder: set model.encoder.frozen: false")
        return AttributeClassifier(encoder, self.num_attributes, self.num_queries)

    @classmethod
    def validate_model(cls, node: Optional[Mapping[str, Any]], where: str) -> None:
        from ..build import check_args

        check_args(_ModelNode, node or {}, where, "model")

    @staticmethod
    def _media(batch: Mapping[str, Any]) -> Tensor:
        return batch["video"] if "video" in batch else batch["image"]

    def train_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        logits = model(self._media(batch))
        return {"loss": F.binary_cross_entropy_with_logits(logits, batch["labels"])}

    def evaluate(self, model: Any, dataset: Any, context: Any) -> dict[str, float]:
        correct = total = exact = items = 0
        loss_sum = 0.0
        for batch, _ in eval_batches(model, dataset, context):
            if batch is None:
                continue
            with context.autocast():
                logits = model(self._media(batch)).float()
            labels = batch["labels"]
            loss_sum += float(F.binary_cross_entropy_with_logits(logits, labels, reduction="sum"))
            hits = (logits > 0) == (labels > 0.5)
            correct, total = correct + int(hits.sum()), total + hits.numel()
            exact, items = exact + int(hits.all(dim=1).sum()), items + hits.shape[0]
        parts = context.gather([(correct, total, exact, items, loss_sum)])
        correct, total, exact, items, loss_sum = (sum(p[i] for p in parts) for i in range(5))
        metrics = {"attribute_accuracy": 100.0 * correct / max(total, 1),
                   "exact_match": 100.0 * exact / max(items, 1),
                   "loss": loss_sum / max(total, 1)}
        return broadcast_object(metrics)

    def metric_names(self) -> list[str]:
        return ["attribute_accuracy", "exact_match", "loss"]

    def export(self, model: nn.Module, output_dir: str | Path) -> Path:
        """Write the (frame) encoder's weights to ``<output_dir>/export/encoder.safetensors``."""
        module = model.encoder.get_submodule(self.export_component) if self.export_component else model.encoder
        path = RunDir(output_dir).export / "encoder.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_weights({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, path)
        return path


def _ModelNode(encoder: component("encoder")) -> None:  # noqa: N802 - the model node's schema
    """The model node of attribute pretraining: just the encoder."""
