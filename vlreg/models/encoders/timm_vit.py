"""timm Vision Transformers as encoders, and BLIP-2's two image encoders as presets over them.

``timm_vit`` wraps any timm model with the ViT interface (``patch_embed``, ``blocks``,
``forward_features``, ``prune_intermediate_layers``): the vit_*, deit_*, eva* families.
``eva_vit_g`` and ``clip_vit_l`` are that same class with BLIP-2's choices fixed: the
last block removed (features of the second-last block) and a LayerNorm on top.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
from torch import Tensor, nn

from ...errors import ConfigError, did_you_mean
from ...registry import register
from ..base import Encoder, Features, Precision, is_dry_build
from . import check_media, encoding


def read_state_dict(path: str) -> dict[str, Tensor]:
    """The tensors of a weights file: safetensors, or a torch pickle read with ``weights_only=True``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"checkpoint {path!r} does not exist")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file))
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ConfigError(f"cannot read checkpoint {path!r}: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"checkpoint {path!r} is not a state dict (a flat mapping of names to tensors)")
    return state


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
        drop_last_blocks: remove the last k blocks. The tokens are then the raw output of the
            last remaining block: timm's final norm, which belongs to the full stack, goes too
            (BLIP-2 takes the second-last block of its ViTs this way).
        final_norm: a LayerNorm after the blocks, like BLIP-2's ``ln_vision``; it belongs to
            this encoder and is frozen with it.
        frozen: no gradients, eval mode, and no autograd graph in ``forward``.
        precision: the dtype of frozen weights (``bf16``/``fp16`` halve memory and run faster);
            inputs are cast to it and the tokens come back as float32.
        grad_checkpointing: recompute block activations during backward (fine-tuning an
            unfrozen encoder at large batch); uses timm's ``set_grad_checkpointing``.

    Inside :func:`vlreg.models.base.dry_build` nothing is loaded: the architecture alone is built.
    """

    def __init__(
        self,
        model: str,
        img_size: Optional[int] = None,
        pretrained: bool = False,
        checkpoint: Optional[str] = None,
        model_kwargs: Optional[dict[str, Any]] = None,
        drop_last_blocks: int = 0,
        final_norm: bool = False,
        frozen: bool = True,
        precision: Precision = "fp32",
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        self.model_name = model
        dry = is_dry_build()
        kwargs = dict(model_kwargs or {})
        if img_size is not None:
            kwargs["img_size"] = img_size
        vit = create_timm_model(model, pretrained=pretrained and not dry, **kwargs)
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
        if checkpoint is not None and not dry:
            self.load_weights(checkpoint)
        if grad_checkpointing:
            if frozen:
                raise ConfigError("grad_checkpointing saves memory in backward and needs a trainable encoder: "
                                  "set frozen: false")
            vit.set_grad_checkpointing(True)
        self.configure_frozen(frozen, precision)

    def load_weights(self, path: str) -> None:
        """Load a weights file: this encoder's own state dict, or a bare timm model's (see ``checkpoint``)."""
        state = read_state_dict(path)
        own = any(key.startswith("vit.") for key in state)
        target = self if own else self.vit
        if not own:
            state = {k: v for k, v in state.items() if not self._removed_part(k)}
        expected = set(target.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ConfigError(
                f"checkpoint {path!r} does not fit encoder {self.model_name!r}: "
                f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
            )
        try:
            target.load_state_dict(state)
        except RuntimeError as exc:  # shapes differ: another width or image size
            detail = " ".join(str(exc).split("\n")[1:3]).strip()
            raise ConfigError(f"checkpoint {path!r} does not fit encoder {self.model_name!r}: {detail}") from None

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
            raise ConfigError(f"image encoder {self.model_name!r} takes no mask (every image token is real)")
        with encoding(self, media):
            tokens = self.post_norm(self.vit.forward_features(media.to(self.dtype)))
        return Features(tokens.float())

    def example_input(self, batch_size: int = 2, device: torch.device | str = "cpu") -> tuple[Tensor, None]:
        """Zero images ``[batch_size, 3, H, W]`` and no mask."""
        return torch.zeros(batch_size, 3, *self.image_size, device=device), None


class TimmViTPreset(TimmViT):
    """A timm ViT set up as BLIP-2 uses it: last block removed, a LayerNorm on top.

    Subclasses name the timm model in ``timm_model``; the arguments left open are
    ``pretrained``, ``checkpoint``, ``img_size`` (224; BLIP-2 fine-tunes some tasks at 364),
    ``frozen``, ``precision`` and ``grad_checkpointing``, as for :class:`TimmViT`.
    """

    timm_model: ClassVar[str]

    def __init__(
        self,
        pretrained: bool = False,
        checkpoint: Optional[str] = None,
        img_size: int = 224,
        frozen: bool = True,
        precision: Precision = "fp32",
        grad_checkpointing: bool = False,
    ):
        super().__init__(self.timm_model, img_size=img_size, pretrained=pretrained, checkpoint=checkpoint,
                         drop_last_blocks=1, final_norm=True, frozen=frozen, precision=precision,
                         grad_checkpointing=grad_checkpointing)


@register("encoder", "eva_vit_g")
class EvaViTG(TimmViTPreset):
    """EVA-CLIP ViT-g/14 as in BLIP-2: 1408 wide, 39 of its 40 blocks, then a LayerNorm; 257 tokens at 224 px.

    ``pretrained`` loads EVA01-CLIP-g (LAION-400M) through timm, the weights BLIP-2 froze.
    Arguments: ``pretrained``, ``checkpoint``, ``img_size``, ``frozen``, ``precision``,
    ``grad_checkpointing`` (see :class:`TimmViTPreset`).
    """

    timm_model = "eva_giant_patch14_clip_224.laion400m"


@register("encoder", "clip_vit_l")
class ClipViTL(TimmViTPreset):
    """OpenAI CLIP ViT-L/14 as in BLIP-2: 1024 wide, 23 of its 24 blocks, then a LayerNorm; 257 tokens at 224 px.

    ``pretrained`` loads OpenAI's CLIP weights through timm.
    Arguments: ``pretrained``, ``checkpoint``, ``img_size``, ``frozen``, ``precision``,
    ``grad_checkpointing`` (see :class:`TimmViTPreset`).
    """

    timm_model = "vit_large_patch14_clip_224.openai"
