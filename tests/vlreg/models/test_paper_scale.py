"""Paper-scale BLIP-2 model configs, built on the meta device: parameter counts checked independently.

The ViT-g models are compared with transformers' own BLIP-2 classes built on meta from the
equivalent configs; transformers has no CLIP ViT-L BLIP-2, so the ViT-L models are compared
with the sum of timm's CLIP ViT-L, transformers' Q-Former part and transformers' LLM.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import vlreg  # noqa: F401  (installs the torchvision guard before timm and transformers)
from vlreg.config import load_config, to_plain
from vlreg.models.assembly import VisionLanguageModel
from vlreg.models.base import dry_build
from vlreg.models.llms.common import untie_output_embeddings

from tests.common import ASSETS, ROOT

ITG_HEAD_AND_TEMP = 768 * 768 + 768 + 2 * 768 + 30_523 + 1  # transform dense + LayerNorm, output bias, temperature

# (model file, LLM file or None, vision, total parameters, trainable parameters)
MODELS = [
    ("blip2_stage1_vit_g", None, "vit_g", 1_172_654_910, 186_702_654),
    ("blip2_stage1_vit_l", None, "vit_l", 473_747_262, 183_163_710),
    ("blip2_opt2.7b_vit_g", "opt-2.7b", "vit_g", 3_744_679_936, 107_130_880),
    ("blip2_opt2.7b_vit_l", "opt-2.7b", "vit_l", 3_045_772_288, 103_591_936),
    ("blip2_opt6.7b_vit_g", "opt-6.7b", "vit_g", 7_752_738_304, 108_312_064),
    ("blip2_flant5xl_vit_g", "flant5-xl", "vit_g", 3_942_446_592, 106_737_152),
    ("blip2_flant5xl_vit_l", "flant5-xl", "vit_l", 3_243_538_944, 103_198_208),
    ("blip2_flant5xxl_vit_g", "flant5-xxl", "vit_g", 12_229_596_672, 108_312_064),
]


def count(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if not n.startswith(skip))


def text_config(llm: str):
    from transformers import AutoConfig

    settings = dict(to_plain(load_config(f"llms/{llm}.yaml"))["config"])
    return AutoConfig.for_model(settings.pop("model_type"), **settings)


def transformers_counts(llm: str | None, vision: str) -> tuple[int, int]:
    """(total, trainable) of the equivalent model, from transformers' classes (and timm's CLIP ViT-L)."""
    import timm
    from transformers import (AutoModelForCausalLM, AutoModelForSeq2SeqLM, Blip2Config, Blip2ForConditionalGeneration,
                              Blip2ForImageTextRetrieval, Blip2QFormerConfig, Blip2VisionConfig)

    with torch.device("meta"):
        # BLIP-2's ViT-L: CLIP's 24 blocks less the last, its final norm standing for ln_vision (same size)
        vision_count = (count(Blip2ForConditionalGeneration(Blip2Config(image_token_index=0)).vision_model)
                        if vision == "vit_g" else
                        count(timm.create_model("vit_large_patch14_clip_quickgelu_224", depth=23, num_classes=0)))
        vision_config = Blip2VisionConfig(hidden_size=1024) if vision == "vit_l" else Blip2VisionConfig()
        if llm is None:  # stage 1: the retrieval model's Q-Former, plus the ITG head and temperature it lacks
            qformer = Blip2QFormerConfig(use_qformer_text_input=True, vocab_size=30_523)
            retrieval = Blip2ForImageTextRetrieval(Blip2Config(vision_config=vision_config, qformer_config=qformer,
                                                               image_token_index=None))
            trainable = count(retrieval, skip=("vision_model",)) + ITG_HEAD_AND_TEMP
            return vision_count + trainable, trainable
        text = text_config(llm)
        blip2 = Blip2ForConditionalGeneration(Blip2Config(vision_config=vision_config, text_config=text,
                                                          image_token_index=0))
        auto = AutoModelForSeq2SeqLM if text.model_type == "t5" else AutoModelForCausalLM
        language_model = auto.from_config(text)
    if text.model_type == "t5":  # FlanT5 checkpoints have an output head of their own
        untie_output_embeddings(language_model)
    trainable = count(blip2, skip=("vision_model", "language_model"))
    return vision_count + trainable + count(language_model), trainable


@pytest.mark.parametrize("name,llm,vision,total,trainable", MODELS, ids=[m[0] for m in MODELS])
def test_paper_scale_models_have_the_exact_parameter_counts(name, llm, vision, total, trainable):
    with dry_build():
        model = VisionLanguageModel.from_config(to_plain(load_config(f"models/{name}.yaml")))
    assert all(p.is_meta for p in model.parameters())
    ours = (count(model), sum(p.numel() for p in model.parameters() if p.requires_grad))
    assert ours == (total, trainable) == transformers_counts(llm, vision)
    assert model.encoder.num_tokens == 257 and model.bridge.num_queries == 32
    assert model.bridge.num_parameters(trainable_only=True) == trainable  # the frozen parts are frozen


def test_the_opt_model_is_transformers_blip2_opt_2_7b():
    """3,744,679,936 = 985,952,256 (ViT-g) + 107,130,880 (Q-Former, queries, projection) + 2,651,596,800 (OPT)."""
    with dry_build():
        model = VisionLanguageModel.from_config(to_plain(load_config("models/blip2_opt2.7b_vit_g.yaml")))
    parts = (model.encoder.num_parameters(), model.bridge.num_parameters(), model.llm.num_parameters())
    assert parts == (985_952_256, 107_130_880, 2_651_596_800) and sum(parts) == 3_744_679_936


@pytest.mark.parametrize("name", ["blip2_tiny_stage1", "blip2_tiny_opt", "blip2_tiny_t5"])
def test_tiny_models_build_and_run(name, tokenizer_dirs):
    node = to_plain(load_config(f"models/{name}.yaml"))
    role, style = ("bridge", "bert") if "stage1" in name else ("llm", name.split("_")[-1])
    node[role] = {**node[role], "tokenizer": tokenizer_dirs[style]}
    model = VisionLanguageModel.from_config(node)
    batch = {"image": torch.randn(2, 3, 64, 64), "text_input": ["a red circle", "a blue square on the left"],
             "image_id": torch.arange(2)}
    losses = model(batch)
    assert set(losses) == {name for o in model.objectives for name in o.active()} | {"loss"}
    assert losses["loss"].isfinite()


@pytest.mark.slow
def test_dry_run_prints_the_counts():
    config = ASSETS / "configs" / "paper_stage2_opt2.7b.yaml"
    result = subprocess.run([sys.executable, "-m", "vlreg.run", "--cfg", str(config), "--dry-run"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert rows["encoder"][-2:] == ["985,952,256", "0"]
    assert rows["bridge"][-2:] == ["107,130,880", "107,130,880"]
    assert rows["llm"][-2:] == ["2,651,596,800", "0"]
    assert rows["total"][-2:] == ["3,744,679,936", "107,130,880"]
