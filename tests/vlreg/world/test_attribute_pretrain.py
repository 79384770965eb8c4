"""Captionless pretraining of the world's frame encoder on scene attributes, and its export."""

import json

import pytest
import torch

from vlreg.build import build
from vlreg.errors import ConfigError, DataError
from vlreg.runner import Trainer

ENCODER = {"name": "timm_vit", "model": "vit_tiny_patch16_224", "img_size": 32, "model_kwargs": {"depth": 1},
           "frozen": False}


def attributes(world, media="images", split="train", **kwargs):
    processor = {"name": "image_eval" if media == "images" else "video_eval", "image_size": 32}
    if media == "videos":
        processor["num_frames"] = 2
    return build("dataset", {"name": "world_attributes", "root": str(world), "media": media, "split": split,
                             "processor": processor, **kwargs})


def test_items_carry_the_world_labels(small_world):
    data = attributes(small_world)
    manifest = json.loads((small_world / "attributes" / "images.json").read_text())
    item = data[0]
    name = item["media_path"].split("/coco/images/")[1]
    assert item["image"].shape == (3, 32, 32)
    assert item["labels"].tolist() == manifest["labels"][name]
    assert len(data) == sum(1 for s in manifest["split"].values() if s == "train")
    videos = attributes(small_world, "videos", "val")
    assert videos[0]["video"].shape == (2, 3, 32, 32) and len(videos) == 10


def test_unknown_split_and_wrong_label_length_are_named(small_world, tmp_path):
    with pytest.raises(DataError, match="no images in split 'dev'"):
        attributes(small_world, split="dev")
    broken = tmp_path / "w"
    (broken / "attributes").mkdir(parents=True)
    manifest = json.loads((small_world / "attributes" / "images.json").read_text())
    first = next(iter(manifest["labels"]))
    manifest["labels"][first] = [1, 0]
    (broken / "attributes" / "images.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=rf"entry 0 \({first}\): 2 labels for 22 attributes"):
        attributes(broken)


def test_training_lowers_the_loss_and_the_export_loads_as_a_frozen_encoder(small_world, tmp_path):
    task = build("task", {"name": "attribute_pretrain", "num_attributes": 22})
    torch.manual_seed(0)
    model = task.build_model({"encoder": ENCODER})
    run = {"output_dir": str(tmp_path / "run"), "max_steps": 30, "batch_size": 16, "lr": 2e-3, "num_workers": 0,
           "log_every": 5, "checkpoint_every": 0}
    results = Trainer(run).fit(model, task, attributes(small_world), attributes(small_world, split="val"))
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [l["loss"] for l in lines if "loss" in l]
    assert losses[-1] < 0.8 * losses[0]
    assert results["final"]["attribute_accuracy"] > 60
    path = task.export(model, tmp_path / "run")
    frozen = build("encoder", {**ENCODER, "frozen": True, "checkpoint": str(path)})
    images = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(frozen(images).tokens, model.encoder(images).tokens)


def test_the_encoder_must_be_trainable():
    task = build("task", {"name": "attribute_pretrain", "num_attributes": 22})
    with pytest.raises(ConfigError, match="set model.encoder.frozen: false"):
        task.build_model({"encoder": {**ENCODER, "frozen": True}})
