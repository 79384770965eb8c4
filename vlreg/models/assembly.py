"""Encoder + bridge + LLM (+ prompter): one model class for every stage.

The paper's stages are choices of components and loss weights, not code paths:

======================  ==============================  ==================================
stage                   components                      losses
======================  ==============================  ==================================
0  P-Former             prompter (trainable) + llm      reconstruction, contrastive, vocabulary
1  representation       encoder + Q-Former (+ prompter) itc, itm, itg (+ align, paper: 10)
2  generative           encoder + bridge + llm (+ p.)   lm (+ align, paper: 100)
fine-tune / evaluate    encoder + bridge + llm          lm; generate, predict_answers, retrieval
======================  ==============================  ==================================

A batch (``samples``) is a dict: one media key, ``image`` ``[B,3,H,W]``, ``video``
``[B,T,3,H,W]`` or ``features`` ``[B,N,D]`` (with ``features_mask`` ``[B,N]``), or
``visual_tokens`` ``[B,N,D]`` (with ``visual_mask``: the output of the encoder's frozen
part, from the frozen-feature cache); ``text_input`` (list of str); optional ``text_output`` and
``image_id`` (ints or strings; captions of the same image are ITC positives).
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..build import build, call, check_args, component
from ..errors import ConfigError, UserError
from .base import Bridge, Encoder, Features, LanguageModel, Prompter, Prompts

MEDIA_KEYS = {"image": "image", "video": "video", "features": "features"}


@dataclass
class LossWeights:
    """Weights of the named losses; a loss with weight 0 is not computed."""

    itc: float = 0.0
    itm: float = 0.0
    itg: float = 0.0
    lm: float = 0.0
    align: float = 0.0
    reconstruction: float = 0.0
    contrastive: float = 0.0
    vocabulary: float = 0.0

    def active(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v}


def id_tensor(ids: Any, device: torch.device | None = None) -> Optional[Tensor]:
    """Media ids (ints or strings such as ``"coco_9"``) as a ``[B]`` int64 tensor.

    Strings are hashed with CRC-32, the same on every rank, so ids gathered from
    several ranks compare equal exactly when they name the same media.
    """
    if ids is None or isinstance(ids, Tensor):
        return ids if ids is None or device is None else ids.to(device)
    values = [i if isinstance(i, int) else zlib.crc32(str(i).encode()) for i in ids]
    return torch.tensor(values, dtype=torch.long, device=device)


STAGE1 = ("itc", "itm", "itg")
STAGE0 = ("reconstruction", "contrastive", "vocabulary")


class VisionLanguageModel(nn.Module):
    """Frozen encoder and LLM bridged by a trainable bridge, with an optional P-Former.

    Args:
        encoder: media -> visual tokens (frozen by default).
        bridge: visual tokens -> prompts in the LLM's embedding space (Q-Former, projectors, Perceiver).
        llm: the frozen language model (decoder-only or encoder-decoder).
        prompter: a P-Former: trained alone in stage 0; a frozen alignment target in stages 1 and 2.
        losses: the weight of each loss (see :class:`LossWeights`).

    A fixed text prompt for captioning (``"a photo of"``) is the LLM's ``prompt`` argument.

    ``eval_processor`` is the processor node the model's media are prepared with for inference
    (``{name: video_eval, image_size: 64, num_frames: 8}``); :func:`vlreg.load_model` sets it from
    the run or checkpoint, and :meth:`preprocess` uses it.
    """

    eval_processor: Optional[dict[str, Any]] = None

    def __init__(
        self,
        encoder: Optional[component("encoder")] = None,
        bridge: Optional[component("bridge")] = None,
        llm: Optional[component("llm")] = None,
        prompter: Optional[component("prompter")] = None,
        losses: LossWeights = LossWeights(),
    ):
        super().__init__()
        self.encoder, self.bridge, self.llm, self.prompter = encoder, bridge, llm, prompter
        self.weights = losses
        self._check_losses()

    # -- construction -------------------------------------------------------
    @classmethod
    def from_config(cls, node: Any, where: str = "model") -> "VisionLanguageModel":
        """Build from a ``model:`` config node, filling each bridge's widths from its neighbours.

        The encoder and LLM are built first; the bridge and prompter then receive
        ``vision_width`` / ``llm_width`` unless the config sets them, and a mismatch
        between what the config sets and what a neighbour provides names both.
        """
        from ..config import to_plain

        node = dict(to_plain(node) or {})
        check_args(cls, node, where, "model")
        encoder = build("encoder", node["encoder"], f"{where}.encoder") if node.get("encoder") else None
        llm = build("llm", node["llm"], f"{where}.llm") if node.get("llm") else None
        llm_width = llm.width if llm is not None else None
        prompter = None
        if node.get("prompter"):
            prompter = build("prompter", node["prompter"], f"{where}.prompter",
                             defaults={"llm_width": llm_width} if llm_width else None)
            llm_width = llm_width or prompter.llm_width
        bridge = None
        if node.get("bridge"):
            defaults = {}
            if encoder is not None:
                defaults["vision_width"] = encoder.width
                defaults["num_tokens"] = encoder.num_tokens
            if llm_width is not None:
                defaults["llm_width"] = llm_width
            if prompter is not None:
                defaults["num_queries"] = prompter.num_prompts
            bridge = build("bridge", node["bridge"], f"{where}.bridge", defaults=defaults)
        rest = {k: v for k, v in node.items() if k not in ("encoder", "bridge", "llm", "prompter")}
        return call(cls, rest, where, "model", defaults={"encoder": encoder, "bridge": bridge, "llm": llm,
                                                          "prompter": prompter})

    def _check_losses(self) -> None:
        """The shape contract between neighbours, and that each active loss has its parts."""
        enc, bridge, llm, prompter = self.encoder, self.bridge, self.llm, self.prompter

        def mismatch(a: str, a_size: Any, b: str, b_size: Any) -> ConfigError:
            return ConfigError(f"width mismatch: {a} gives {a_size} but {b} expects {b_size}")

        if enc is not None and bridge is not None and getattr(bridge, "vision_width", enc.width) != enc.width:
            raise mismatch(f"encoder {type(enc).__name__} (width)", enc.width,
                           f"bridge {type(bridge).__name__} (vision_width)", bridge.vision_width)
        if bridge is not None and llm is not None and getattr(bridge, "llm_width", llm.width) != llm.width:
            raise mismatch(f"bridge {type(bridge).__name__} (llm_width)", bridge.llm_width,
                           f"llm {type(llm).__name__} (width)", llm.width)
        if prompter is not None and llm is not None and prompter.llm_width != llm.width:
            raise mismatch(f"prompter {type(prompter).__name__} (llm_width)", prompter.llm_width,
                           f"llm {type(llm).__name__} (width)", llm.width)
        active = self.weights.active()
        needs = {
            "itc": ("encoder", "bridge"), "itm": ("encoder", "bridge"), "itg": ("encoder", "bridge"),
            "lm": ("encoder", "bridge", "llm"), "align": ("encoder", "bridge", "prompter"),
            "reconstruction": ("prompter", "llm"), "contrastive": ("prompter",), "vocabulary": ("prompter", "llm"),
        }
        for loss in active:
            missing = [part for part in needs[loss] if getattr(self, part) is None]
            if missing:
                raise ConfigError(f"loss {loss!r} needs a model {' and '.join(missing)}")
        if any(k in active for k in STAGE1) and not getattr(bridge, "text_branch", False):
            raise ConfigError(f"losses itc/itm/itg need a Q-Former bridge with its text branch; "
                              f"{type(bridge).__name__} has none")
        if "align" in active:
            if bridge is not None and getattr(bridge, "num_queries", None) not in (None, prompter.num_prompts):
                raise ConfigError(
                    f"alignment compares {bridge.num_queries} bridge prompts with {prompter.num_prompts} P-Former "
                    "prompts: set the bridge's num_queries to the prompter's num_prompts"
                )
            if prompter is not None and not prompter.frozen:
                raise ConfigError("the P-Former used as alignment target must be frozen (prompter.frozen: true)")

    # -- pieces ---------------------------------------------------------------
    def visual_tokens(self, samples: dict[str, Any]) -> Features:
        """Run the encoder on the batch's media (or take cached tokens): ``Features [B,N,D]``."""
        cached = samples.get("visual_tokens")
        if cached is not None:  # the frozen part's output, from the feature cache
            cached = cached if isinstance(cached, Features) else Features(cached, samples.get("visual_mask"))
            return self.encoder.from_frozen(cached) if self.encoder is not None else cached
        if self.encoder is None:
            raise ConfigError("this model has no encoder")
        present = [k for k in MEDIA_KEYS if k in samples]
        if not present:
            raise UserError(f"the batch has no media: expected one of {', '.join(MEDIA_KEYS)}; got keys {sorted(samples)}")
        key = present[0]
        expected = self.encoder.modality
        if key != expected:
            raise UserError(
                f"{type(self.encoder).__name__} is a{'n' if expected[0] in 'aeiou' else ''} {expected} encoder "
                f"but the batch holds {key!r} of shape {tuple(samples[key].shape)}"
            )
        return self.encoder(samples[key], samples.get("features_mask"))

    def prompts(self, features: Features) -> Prompts:
        """The bridge's soft prompts for visual tokens: ``Prompts [B,Q,Dllm]``."""
        return self.bridge(features)

    def _alignment_targets(self, texts: Sequence[str]) -> Prompts:
        with torch.no_grad():
            return self.prompter(texts)

    # -- training -------------------------------------------------------------
    def forward(self, samples: dict[str, Any]) -> dict[str, Tensor]:
        """Every active loss by name, and ``loss``: their weighted sum (a scalar)."""
        from .losses import alignment_loss

        active = self.weights.active()
        texts = samples["text_input"]
        losses: dict[str, Tensor] = {}
        prompts: Prompts | None = None
        if any(k in active for k in STAGE0):
            losses.update(self.prompter.pretrain_losses(texts, self.llm, {k: active.get(k, 0.0) for k in STAGE0}))
        if any(k in active for k in (*STAGE1, "lm", "align")):
            features = self.visual_tokens(samples)
            if any(k in active for k in STAGE1):
                image_ids = id_tensor(samples.get("image_id"), features.tokens.device)
                out = self.bridge.stage1_losses(features, texts, image_ids, {k: active.get(k, 0.0) for k in STAGE1})
                losses.update(out.losses)
                if "align" in active:
                    prompts = self.bridge.project(out.query_states)
            if prompts is None and ("lm" in active or "align" in active):
                prompts = self.prompts(features)
            if "lm" in active:
                losses["lm"] = self.llm.loss(prompts, texts, samples.get("text_output"))
            if "align" in active:
                targets = self._alignment_targets(texts)
                losses["align"] = alignment_loss(prompts.embeds, targets.embeds.to(prompts.embeds.dtype))
        total = sum(active[k] * v for k, v in losses.items() if k in active)
        return {**losses, "loss": total}

    # -- inference ------------------------------------------------------------
    def preprocess(self, image: Any = None, video: Any = None, features: Any = None) -> dict[str, Any]:
        """A batch for :meth:`generate` and :meth:`predict_answers`, from media files, prepared as the
        model was evaluated (``eval_processor``: image size, normalisation, frames and their sampling).

        Give one of ``image`` (a path, a PIL image or encoded bytes, or a list of them), ``video``
        (a path or a list) or ``features`` (a ``.npy`` path or a list). Returns ``image`` ``[B,3,H,W]``,
        ``video`` ``[B,T,3,H,W]`` or ``features`` ``[B,N,D]`` with ``features_mask`` ``[B,N]``, on the
        model's device; add ``text_input`` (questions) for :meth:`predict_answers`.
        """
        from ..data.media import BadMedia

        given = {k: v for k, v in (("image", image), ("video", video), ("features", features)) if v is not None}
        if len(given) != 1:
            raise UserError(f"preprocess takes one of image=, video= or features=; got {', '.join(given) or 'none'}")
        (modality, sources), = given.items()
        if self.eval_processor is None:
            raise UserError("the model has no eval_processor (a processor node such as {name: image_eval, "
                            "image_size: 224}) to prepare media with: set model.eval_processor")
        processor = build("processor", self.eval_processor, "eval_processor")
        if processor.modality != modality:
            raise UserError(f"this model reads {processor.modality} (eval_processor {self.eval_processor['name']}); "
                            f"got {modality}=")
        sources = list(sources) if isinstance(sources, (list, tuple)) else [sources]
        try:
            items = [processor.fields(source) for source in sources]
        except BadMedia as exc:
            raise UserError(f"cannot read {modality}: {exc}") from None
        device = next(self.parameters()).device
        return {key: torch.stack([item[key] for item in items]).to(device) for key in items[0]}

    @torch.no_grad()
    def generate(self, samples: dict[str, Any], **generation_kwargs: Any) -> list[str]:
        """Captions for a batch of media (after the LLM's fixed ``prompt``, if any)."""
        prompts = self.prompts(self.visual_tokens(samples))
        return self.llm.generate(prompts, None, **generation_kwargs)

    @torch.no_grad()
    def predict_answers(
        self,
        samples: dict[str, Any],
        prompt: str = "Question: {} Short answer:",
        method: str = "generate",
        answer_list: Sequence[str] | None = None,
        **generation_kwargs: Any,
    ) -> list[str]:
        """Answers to ``samples["text_input"]`` questions, generated or ranked over ``answer_list``."""
        prompts = self.prompts(self.visual_tokens(samples))
        questions = [prompt.format(q) for q in samples["text_input"]]
        if method == "generate":
            return self.llm.generate(prompts, questions, **generation_kwargs)
        if method == "rank":
            if not answer_list:
                raise UserError("predict_answers(method='rank') needs an answer_list")
            scores = self.llm.score(prompts, questions, list(answer_list))
            return [answer_list[i] for i in scores.argmax(dim=1).tolist()]
        raise UserError(f"predict_answers: method must be 'generate' or 'rank', got {method!r}")

    # -- bookkeeping ----------------------------------------------------------
    def components(self) -> dict[str, nn.Module]:
        """The parts that are present, by role."""
        parts = {"encoder": self.encoder, "bridge": self.bridge, "prompter": self.prompter, "llm": self.llm}
        return {k: v for k, v in parts.items() if v is not None}
