"""timm Vision Transformers as encoders, and BLIP-2's two image encoders as presets over them.

``timm_vit`` wraps any timm model with the ViT interface (``patch_embed``, ``blocks``,
``forward_features``, ``prune_intermediate_layers``): the vit_*, deit_*, eva* families.
``eva_vit_g`` and ``clip_vit_l`` are that same class with BLIP-2's choices fixed: the
last block removed (features of the second-last block) and a LayerNorm on top.

Both presets are timm ``VisionTransformer`` models, whose blocks map one-to-one onto
transformers' ``Blip2VisionModel`` and LAVIS's encoders (see :mod:`vlreg.models.encoders.vision_keys`).
EVA ViT-g is built as ``vit_giant_patch14_clip_224`` without CLIP's pre-norm: EVA's weights
(separate query and value biases) load into its single ``qkv`` bias with a zero key part.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Optional

import torch
from torch import Tensor, nn

from ...errors import ConfigError, InputError, did_you_mean
from ...io.fingerprints import sha256_tensors
from ...io.sources import file_source
from ...io.weights import read_weights
from ...registry import register
from ..base import Encoder, Features, Precision, is_dry_build
from . import check_media, encoding
from .vision_keys import fuse_qv_bias, is_eva_layout


def create_timm_model(model: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` without a classifier; an unknown name is a ConfigError naming the closest one."""
    import timm

    arch = model.split(".")[0]
    if ":" not in model and not timm.is_model(arch):
        raise ConfigError(f"unknown timm model {arch!r}{did_you_mean(arch, timm.list_models())}")
    return timm.create_model(model, pretrained=pretrained, num_classes=0, **kwargs)


@register("encoder", "timm_vit")
class TimmViT(Encoder):
    """Any timm Vision Transformer: images ``[B, 3, H, W]`` -> all its tokens ``[B, N, D]``.

    The tokens are the prefix tokens (class token, registers) then the patches, in
    timm's order, so ``N = num_prefix_tokens + (H / patch) * (W / patch)`` and
    ``D`` is the model's width. Pixels arrive normalised by the processor.

    Args:
        model: a timm model name, optionally with its pretrained tag
            (``vit_base_patch16_224.augreg_in21k``, ``eva_giant_patch14_clip_224.laion400m``).
        img_size: the input size in pixels; None keeps the model's own (timm resamples
            pretrained position embeddings to a new size).
        pretrained: load timm's hub weights for ``model`` (needs the hub or its local cache).
        checkpoint: a local weights file loaded after ``pretrained``: ``.safetensors``, or a
            torch pickle (``.pth``/``.pt``/``.bin``) read with ``weights_only=True``. It holds either
            this encoder's own ``state_dict()`` (keys ``vit.*`` and ``post_norm.*``; how vlreg saves
            an encoder) or a bare timm model's, where the blocks that ``drop_last_blocks`` removes,
            timm's final norm and the classifier head may be present and are skipped.
        model_kwargs: more arguments for ``timm.create_model`` (``{depth: 2}`` for a tiny test model).
        layer_norm_eps: the epsilon of every LayerNorm of the encoder (timm's and ``final_norm``);
            None keeps the model's own (timm's CLIP ViTs use 1e-5, most others 1e-6).
        drop_last_blocks: remove the last k blocks. The tokens are then the raw output of the
            last remaining block: timm's final norm, which belongs to the full stack, goes too
            (BLIP-2 takes the second-last block of its ViTs this way).
        final_norm: a LayerNorm after the blocks, like BLIP-2's ``ln_vision``; it belongs to
            this encoder and is frozen with it.
        frozen: no gradients, eval mode, and no autograd graph in ``forward``.
        precision: the dtype of frozen weights (``auto``: by the device, see :mod:`vlreg.device`;
            ``bf16``/``fp16`` halve memory and run faster where the device computes them natively);
            inputs are cast to it and the tokens come back as float32.
        grad_checkpointing: recompute block activations during backward (fine-tuning an
            unfrozen encoder at large batch); uses timm's ``set_grad_checkpointing``.

    Weights in EVA's layout (``attn.q_bias`` and ``attn.v_bias``, as in LAVIS's ``eva_vit_g.pth``
    and timm's ``eva_*`` models) load into a model with a full ``qkv`` bias, the key part zero.
    Inside :func:`vlreg.models.base.dry_build` nothing is loaded: the architecture alone is built.

    :meth:`weight_source` says where the frozen weights came from (the checkpoint file, or
    timm's hub) and their sha256, for checkpoints that reference rather than copy them.
    """

    pretrained_weights: ClassVar[Optional[str]] = None
    """The timm model whose pretrained weights ``pretrained`` loads, when not ``model`` itself
    (EVA's weights for an EVA-shaped ``VisionTransformer``); they are converted on load."""

    def __init__(
        self,
        model: str,
        img_size: Optional[int] = None,
        pretrained: bool = False,
        checkpoint: Optional[str] = None,
        model_kwargs: Optional[dict[str, Any]] = None,
        layer_norm_eps: Optional[float] = None,
        drop_last_blocks: int = 0,
        final_norm: bool = False,
        frozen: bool = True,
        precision: Precision = "auto",
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        self.model_name = model
        self._weight_source: Optional[dict[str, str]] = None
        dry = is_dry_build()
        kwargs = dict(model_kwargs or {})
        if img_size is not None:
            kwargs["img_size"] = img_size
        own_pretrained = pretrained and not dry and self.pretrained_weights is None
        vit = create_timm_model(model, pretrained=own_pretrained, **kwargs)
        if not all(hasattr(vit, a) for a in ("patch_embed", "blocks", "prune_intermediate_layers")):
            raise ConfigError(f"timm model {model!r} is not a Vision Transformer (patch_embed and blocks); "
                              "timm_vit needs one")
        depth = len(vit.blocks)
        if not 0 <= drop_last_blocks < depth:
            raise ConfigError(f"drop_last_blocks must be in [0, {depth - 1}] for {model!r} ({depth} blocks), "
                              f"got {drop_last_blocks}")
        vit.prune_intermediate_layers([depth - 1 - drop_last_blocks], prune_norm=drop_last_blocks > 0,
                                      prune_head=True)
        self.vit = vit
        self.width: int = vit.num_features
        self.num_tokens: int = vit.patch_embed.num_patches + vit.num_prefix_tokens
        self.image_size: tuple[int, int] = tuple(vit.patch_embed.img_size)
        self.post_norm = nn.LayerNorm(self.width) if final_norm else nn.Identity()
        if layer_norm_eps is not None:
            for module in self.modules():
                if isinstance(module, nn.LayerNorm):
                    module.eps = layer_norm_eps
        if own_pretrained and checkpoint is None:
            self._weight_source = {"source": f"timm:{model}", "sha256": sha256_tensors(vit.state_dict())}
        elif pretrained and not dry and checkpoint is None:
            self._load_pretrained_weights()
        if checkpoint is not None and not dry:
            self.load_weights(checkpoint)
            self._weight_source = file_source(checkpoint)
        if grad_checkpointing:
            if frozen:
                raise ConfigError("grad_checkpointing saves memory in backward and needs a trainable encoder: "
                                  "set frozen: false")
            vit.set_grad_checkpointing(True)
        self.configure_frozen(frozen, precision)

    def weight_source(self) -> Optional[dict[str, str]]:
        """``{"source", "sha256"}`` of the loaded weights, or None (random initialisation).

        ``source`` is the checkpoint file's absolute path (``sha256``: of its bytes), or
        ``timm:<model>`` for timm's pretrained weights (``sha256``: of the loaded tensors, as
        they arrive through timm's download cache). Computed once, when the weights load.
        """
        return self._weight_source

    def forget_weight_source(self) -> None:
        """Declare the weights changed since they were loaded (a checkpoint then saves them in full)."""
        self._weight_source = None

    def _load_pretrained_weights(self) -> None:
        """Load ``pretrained_weights`` from timm's hub into this encoder's architecture."""
        donor = create_timm_model(self.pretrained_weights, pretrained=True, img_size=self.image_size)
        state = donor.state_dict()
        self._weight_source = {"source": f"timm:{self.pretrained_weights}", "sha256": sha256_tensors(state)}
        self.load_state(state, f"timm model {self.pretrained_weights!r}")

    def load_weights(self, path: str) -> None:
        """Load a weights file: this encoder's own state dict, or a bare timm model's (see ``checkpoint``)."""
        self.load_state(read_weights(path), f"checkpoint {path!r}")

    def load_state(self, state: dict[str, Tensor], origin: str) -> None:
        """Load this encoder's own state dict (keys ``vit.*``, ``post_norm.*``) or a bare timm model's.

        A bare model's late blocks, final norm and head that this encoder removed are skipped;
        EVA's separate query and value biases become the full ``qkv`` bias. ``origin`` names
        the weights in errors.
        """
        own = any(key.startswith("vit.") for key in state)
        target = self if own else self.vit
        if not own:
            state = {k: v for k, v in state.items() if not self._removed_part(k)}
        expected = set(target.state_dict())
        if is_eva_layout(state) and not is_eva_layout(dict.fromkeys(expected)):
            state = fuse_qv_bias(state)
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ConfigError(
                f"{origin} does not fit encoder {self.model_name!r}: "
                f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
            )
        try:
            target.load_state_dict(state)
        except RuntimeError as exc:  # shapes differ: another width or image size
            detail = " ".join(str(exc).split("\n")[1:3]).strip()
            raise ConfigError(f"{origin} does not fit encoder {self.model_name!r}: {detail}") from None

    def _removed_part(self, key: str) -> bool:
        """Whether a bare timm key belongs to what this encoder removed (late blocks, final norm, head)."""
        block = re.match(r"blocks\.(\d+)\.", key)
        if block:
            return int(block.group(1)) >= len(self.vit.blocks)
        top = key.split(".")[0]
        return top in ("head", "fc_norm", "attn_pool") or (top == "norm" and isinstance(self.vit.norm, nn.Identity))

    def forward(self, media: Tensor, mask: Tensor | None = None) -> Features:
        """Images ``[B, 3, H, W]`` -> ``Features(tokens [B, N, D] float32, mask None)``."""
        height, width = self.image_size
        check_media(f"image encoder {self.model_name!r} (for videos, wrap it in a 'video' encoder)", media,
                    B=None, C=3, H=height, W=width)
        if mask is not None:
            raise InputError(f"image encoder {self.model_name!r} takes no mask (every image token is real)")
        with encoding(self, media):
            tokens = self.post_norm(self.vit.forward_features(media.to(self.dtype)))
        return Features(tokens.float())

    def example_input(self, batch_size: int = 2, device: torch.device | str = "cpu") -> tuple[Tensor, None]:
        """Zero images ``[batch_size, 3, H, W]`` and no mask."""
        return torch.zeros(batch_size, 3, *self.image_size, device=device), None


class TimmViTPreset(TimmViT):
    """A timm ViT set up as BLIP-2 uses it: last block removed, a LayerNorm on top.

    Subclasses name the timm model in ``timm_model`` (with ``timm_kwargs`` and ``norm_eps``
    fixing its architecture); the arguments left open are ``pretrained``, ``checkpoint``,
    ``img_size`` (224; BLIP-2 fine-tunes some tasks at 364), ``frozen``, ``precision`` and
    ``grad_checkpointing``, as for :class:`TimmViT`.
    """

    timm_model: ClassVar[str]
    timm_kwargs: ClassVar[dict[str, Any]] = {}
    norm_eps: ClassVar[Optional[float]] = None

    def __init__(
        self,
        pretrained: bool = False,
        checkpoint: Optional[str] = None,
        img_size: int = 224,
        frozen: bool = True,
        precision: Precision = "auto",
        grad_checkpointing: bool = False,
    ):
        super().__init__(self.timm_model, img_size=img_size, pretrained=pretrained, checkpoint=checkpoint,
                         model_kwargs=dict(self.timm_kwargs), layer_norm_eps=self.norm_eps, drop_last_blocks=1,
                         final_norm=True, frozen=frozen, precision=precision, grad_checkpointing=grad_checkpointing)


@register("encoder", "eva_vit_g")
class EvaViTG(TimmViTPreset):
    """EVA-CLIP ViT-g/14 as in BLIP-2: 1408 wide, 39 of its 40 blocks, then a LayerNorm; 257 tokens at 224 px.

    A timm ``VisionTransformer`` with EVA-g's shape (``vit_giant_patch14_clip_224`` without CLIP's
    pre-norm; LayerNorm epsilon 1e-6 as in EVA and transformers' ``Blip2VisionModel``), so that
    its parameters are exactly those of transformers' BLIP-2 vision model, ``post_layernorm``
    being ``post_norm`` (BLIP-2's ``ln_vision``). ``pretrained`` loads EVA01-CLIP-g (LAION-400M)
    through timm (``eva_giant_patch14_clip_224.laion400m``), the weights BLIP-2 froze, and folds
    their query and value biases into the ``qkv`` bias. ``checkpoint`` takes this encoder's own
    state dict or EVA's (LAVIS's ``eva_vit_g.pth``).
    Arguments: ``pretrained``, ``checkpoint``, ``img_size``, ``frozen``, ``precision``,
    ``grad_checkpointing`` (see :class:`TimmViTPreset`).
    """

    timm_model = "vit_giant_patch14_clip_224"
    timm_kwargs = {"pre_norm": False}
    norm_eps = 1e-6
    pretrained_weights = "eva_giant_patch14_clip_224.laion400m"


@register("encoder", "clip_vit_l")
class ClipViTL(TimmViTPreset):
    """OpenAI CLIP ViT-L/14 as in BLIP-2: 1024 wide, 23 of its 24 blocks, then a LayerNorm; 257 tokens at 224 px.

    CLIP's own pre-norm and QuickGELU activation are kept (timm's ``*_quickgelu`` model, as LAVIS's
    ``clip_vit_L``). transformers' ``Blip2VisionModel`` has no pre-norm, so this variant has no
    transformers export. ``pretrained`` loads OpenAI's CLIP weights through timm.
    Arguments: ``pretrained``, ``checkpoint``, ``img_size``, ``frozen``, ``precision``,
    ``grad_checkpointing`` (see :class:`TimmViTPreset`).
    """

    timm_model = "vit_large_patch14_clip_quickgelu_224.openai"
