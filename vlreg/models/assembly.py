"""Encoder + bridge + LLM (+ prompter): one model class for every stage.

The paper's stages are choices of components and objectives (``losses``), not code paths:

======================  ==============================  =============================================
stage                   components                      objectives (:mod:`vlreg.objectives`)
======================  ==============================  =============================================
0  P-Former             prompter (trainable) + llm      pformer_stage0
1  representation       encoder + Q-Former (+ prompter) blip2_stage1 (+ pformer_alignment, paper: 10)
2  generative           encoder + bridge + llm (+ p.)   lm (+ pformer_alignment, paper: 100)
fine-tune / evaluate    encoder + bridge + llm          lm; generate, predict_answers, retrieval
======================  ==============================  =============================================

The model's parts keep their contracts (encoder -> Features, bridge -> Prompts, prompter ->
Prompts, llm -> loss, text, scores); ``forward`` hands each batch to the objectives, which
compute named losses from the parts.

A batch (``samples``) is a dict: one media key, ``image`` ``[B,3,H,W]``, ``video``
``[B,T,3,H,W]`` or ``features`` ``[B,N,D]`` (with ``features_mask`` ``[B,N]``), or
``visual_tokens`` ``[B,N,D]`` (with ``visual_mask``: the output of the encoder's frozen
part, from the frozen-feature cache); ``text_input`` (list of str); optional ``text_output`` and
``image_id`` (ints or strings; captions of the same image are ITC positives).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from ..build import build, call, check_args, component, parameters
from ..errors import ConfigError, InputError
from ..registry import registry
from .base import Features, Prompts
from .step import MEDIA_KEYS, Step

PARTS = ("encoder", "bridge", "prompter", "llm")


class VisionLanguageModel(nn.Module):
    """Frozen encoder and LLM bridged by a trainable bridge, with an optional P-Former.

    Args:
        encoder: media -> visual tokens (frozen by default).
        bridge: visual tokens -> prompts in the LLM's embedding space (Q-Former, projectors, Perceiver).
        llm: the frozen language model (decoder-only or encoder-decoder).
        prompter: a P-Former: trained alone in stage 0; a frozen alignment target in stages 1 and 2.
        losses: the objectives it trains, each a node ``{name: <objective>, <its weights>}``
            (``[{name: blip2_stage1}, {name: pformer_alignment, weight: 10}]``; ``vlreg list objective``).
            They run in the order listed, except that those whose own pass makes the bridge's
            prompts (``blip2_stage1``) run first, so that the others reuse them. None or empty: a
            model for inference, which ``forward`` refuses.

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
        losses: Optional[list[component("objective")]] = None,
    ):
        super().__init__()
        self.encoder, self.bridge, self.llm, self.prompter = encoder, bridge, llm, prompter
        objectives = list(losses or [])
        for objective in objectives:
            if not (isinstance(objective, nn.Module) and hasattr(objective, "needs") and hasattr(objective, "active")):
                raise TypeError(f"losses: expected objectives (vlreg.objectives.Objective), got {objective!r}")
        self.objectives = nn.ModuleList(sorted(objectives, key=lambda o: not o.offers_prompts))
        self._check_widths()
        self._check_objectives()

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
        cls.check_node(node, where)
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

    @classmethod
    def check_node(cls, node: Any, where: str = "model") -> None:
        """Check a ``model:`` node without building anything: its keys, every component and objective
        node, and that each objective has the parts it ``needs`` (a one-line ConfigError)."""
        from ..config import to_plain

        node = dict(to_plain(node) or {})
        losses = node.get("losses")
        if isinstance(losses, Mapping):
            raise ConfigError(f"{where}.losses: a list of objective nodes, not a mapping of loss weights; for these "
                              f"weights: losses: {flow(objectives_from_weights(losses))} (vlreg list -l objective)")
        check_args(cls, node, where, "model")
        present = {part for part in PARTS if node.get(part)}
        for i, item in enumerate(losses or []):
            objective = build("objective", item, f"{where}.losses[{i}]")  # no weights, no parts: cheap
            missing = [part for part in objective.needs if part not in present]
            if missing and objective.active():
                raise ConfigError(f"{where}.losses[{i}]: objective {objective_name(objective)!r} needs a model "
                                  f"{' and '.join(missing)}")

    def _check_widths(self) -> None:
        """The shape contract between neighbours."""
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

    def _check_objectives(self) -> None:
        """Each objective has its parts and they fit it; no two objectives name a loss alike."""
        present = set(self.components())
        produced: dict[str, str] = {}
        for objective in self.objectives:
            label = f"objective {objective_name(objective)!r}"
            missing = [part for part in objective.needs if part not in present]
            if missing and objective.active():
                raise ConfigError(f"{label} needs a model {' and '.join(missing)}")
            if not missing:
                objective.check(self)
            for loss in objective.loss_names:
                if loss in produced:
                    raise ConfigError(f"{label} and objective {produced[loss]!r} both compute a loss {loss!r}; "
                                      "list each objective once")
                produced[loss] = objective_name(objective)
        if self.objectives and not any(objective.active() for objective in self.objectives):
            raise ConfigError("losses: every weight of every objective is 0, so nothing would train")

    # -- pieces ---------------------------------------------------------------
    def visual_tokens(self, samples: dict[str, Any]) -> Features:
        """Run the encoder on the batch's media (or take cached tokens): ``Features [B,N,D]``."""
        cached = samples.get("visual_tokens")
        if cached is not None:  # the frozen part's output, from the feature cache
            cached = cached if isinstance(cached, Features) else Features(cached, samples.get("visual_mask"))
            return self.encoder.from_frozen(cached) if self.encoder is not None else cached
        if self.encoder is None:
            raise InputError("this model has no encoder: it takes no media")
        present = [k for k in MEDIA_KEYS if k in samples]
        if not present:
            raise InputError(f"the batch has no media: expected one of {', '.join(MEDIA_KEYS)}; got keys {sorted(samples)}")
        key = present[0]
        expected = self.encoder.modality
        if key != expected:
            raise InputError(
                f"{type(self.encoder).__name__} is a{'n' if expected[0] in 'aeiou' else ''} {expected} encoder "
                f"but the batch holds {key!r} of shape {tuple(samples[key].shape)}"
            )
        return self.encoder(samples[key], samples.get("features_mask"))

    def prompts(self, features: Features) -> Prompts:
        """The bridge's soft prompts for visual tokens: ``Prompts [B,Q,Dllm]``."""
        return self.bridge(features)

    # -- training -------------------------------------------------------------
    def forward(self, samples: dict[str, Any]) -> dict[str, Tensor]:
        """Every objective's losses by name (scalars), and ``loss``: their weighted sum.

        A loss of weight 0 is not computed (an objective of weights 0 needs neither its parts nor
        its batch keys). A batch without a key an objective reads (``batch_keys``) is an
        InputError, raised before any objective runs.
        """
        if not self.objectives:
            raise ConfigError("the model trains no objective: list them under model.losses, e.g. [{name: lm}] "
                              "(vlreg list -l objective)")
        step = Step(self, samples)
        running = [(objective, active) for objective in self.objectives if (active := objective.active())]
        for objective, _ in running:
            step.require(objective.batch_keys, f"objective {objective_name(objective)!r}")
        losses: dict[str, Tensor] = {}
        weighted = []
        for objective, active in running:
            for name, value in objective(step).items():
                losses[name] = value
                weighted.append(active[name] * value)
        return {**losses, "loss": sum(weighted)}

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
            raise TypeError(f"preprocess takes one of image=, video= or features=; got {', '.join(given) or 'none'}")
        (modality, sources), = given.items()
        if self.eval_processor is None:
            raise ValueError("the model has no eval_processor (a processor node such as {name: image_eval, "
                            "image_size: 224}) to prepare media with: set model.eval_processor")
        processor = build("processor", self.eval_processor, "eval_processor")
        if processor.modality != modality:
            raise InputError(f"this model reads {processor.modality} (eval_processor {self.eval_processor['name']}); "
                            f"got {modality}=")
        sources = list(sources) if isinstance(sources, (list, tuple)) else [sources]
        try:
            items = [processor.fields(source) for source in sources]
        except BadMedia as exc:
            raise InputError(f"cannot read {modality}: {exc}") from None
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
                raise ValueError("predict_answers(method='rank') needs an answer_list")
            scores = self.llm.score(prompts, questions, list(answer_list))
            return [answer_list[i] for i in scores.argmax(dim=1).tolist()]
        raise ValueError(f"predict_answers: method must be 'generate' or 'rank', got {method!r}")

    # -- bookkeeping ----------------------------------------------------------
    def components(self) -> dict[str, nn.Module]:
        """The parts that are present, by role."""
        parts = {"encoder": self.encoder, "bridge": self.bridge, "prompter": self.prompter, "llm": self.llm}
        return {k: v for k, v in parts.items() if v is not None}


def objective_name(objective: nn.Module) -> str:
    """The name an objective is registered under (its class name if it is not registered)."""
    return registry("objective").name_of(type(objective)) or type(objective).__name__


def objectives_from_weights(weights: Mapping[str, float]) -> list[dict[str, Any]]:
    """The objective list of a mapping of loss weights (``{itc: 1, itm: 1, itg: 1, align: 10}``), the
    ``losses:`` format of runs written before objectives: for each registered objective that computes
    one of the losses with a weight other than 0, a node with its weights (a loss it computes that the
    mapping does not name gets 0; an objective's single weight is ``weight``)."""
    nodes, claimed = [], set()
    objectives = registry("objective")
    for name in objectives.names():
        target = objectives.get(name)
        own = {loss: float(weights.get(loss, 0.0)) for loss in target.loss_names}
        if not any(own.values()):
            continue
        claimed.update(own)
        keys = parameters(target)[0]
        node: dict[str, Any] = {"name": name}
        for loss, weight in own.items():
            node[loss if loss in keys else "weight"] = weight
        nodes.append(node)
    unknown = sorted(k for k, v in weights.items() if v and k not in claimed)
    if unknown:
        raise ConfigError(f"losses: no objective computes {', '.join(unknown)}")
    return nodes


def flow(nodes: Sequence[Mapping[str, Any]]) -> str:
    """Nodes in YAML flow style: ``[{name: lm}, {name: pformer_alignment, weight: 100}]``."""
    def value(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    return "[" + ", ".join("{" + ", ".join(f"{k}: {value(v)}" for k, v in n.items()) + "}" for n in nodes) + "]"
