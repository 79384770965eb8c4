"""The frozen-feature cache: exact, reused, invalidated when its keys change, bypassed when random."""

import os
import shutil

import pytest
import torch

from vlreg.build import build
from vlreg.data.collate import collate
from vlreg.data.media import BadSample
from vlreg.runner.feature_cache import attach_feature_cache, cache_key


def dataset(world, processor="image_eval", **kwargs):
    return build("dataset", {"name": "coco_caption", "root": f"{world}/coco", "split": "train",
                             "processor": {"name": processor, "image_size": 32, **kwargs}})


@pytest.fixture()
def encoder(tiny_nodes):
    torch.manual_seed(0)
    return build("encoder", tiny_nodes["image"])


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_cached_tokens_equal_the_encoder_and_are_reused(small_world, encoder, tmp_path):
    reference = dataset(small_world)
    cached = dataset(small_world)
    calls = count_calls(encoder)
    assert attach_feature_cache(cached, encoder, tmp_path, batch_size=16)
    assert len(calls) > 0
    for i in (0, 7, len(cached) - 1):
        item, plain = cached[i], reference[i]
        assert "image" not in item and item["text_input"] == plain["text_input"]
        with torch.no_grad():
            expected = encoder(plain["image"][None]).tokens[0]
        # equal up to float summation order (the fill ran batches of 16)
        torch.testing.assert_close(item["visual_tokens"], expected, rtol=1e-5, atol=1e-5)
    first_fill = len(calls)
    # a new dataset object (another epoch, another stage) finds everything cached
    again = dataset(small_world)
    assert attach_feature_cache(again, encoder, tmp_path, batch_size=16)
    assert len(calls) == first_fill
    batch = collate([again[i] for i in range(4)])
    assert batch["visual_tokens"].shape == (4, encoder.num_tokens, encoder.width)


def test_keys_change_with_encoder_weights_and_preprocessing(small_world, encoder, tiny_nodes):
    base = cache_key(encoder, dataset(small_world).processor)
    assert cache_key(encoder, dataset(small_world, image_size=32).processor) == base
    assert cache_key(encoder, dataset(small_world, mean=[0.5, 0.5, 0.5]).processor) != base
    other = build("encoder", tiny_nodes["image"])  # other random weights
    assert cache_key(other, dataset(small_world).processor) != base


def test_changed_media_file_is_encoded_again(small_world, encoder, tmp_path):
    world = tmp_path / "world"
    shutil.copytree(small_world, world)
    cache = tmp_path / "cache"
    assert attach_feature_cache(dataset(world), encoder, cache)
    target = dataset(world).records[0]["media_path"]
    stat = os.stat(target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    calls = count_calls(encoder)
    assert attach_feature_cache(dataset(world), encoder, cache, batch_size=8)
    assert len(calls) == 1  # one batch: only the touched file


def test_random_augmentation_bypasses_the_cache(small_world, encoder, tmp_path):
    train = dataset(small_world, processor="image_train")
    assert not attach_feature_cache(train, encoder, tmp_path)
    assert "image" in train[0] and not any(tmp_path.iterdir())


def test_bad_media_stays_bad_through_the_cache(small_world, encoder, tmp_path):
    world = tmp_path / "world"
    shutil.copytree(small_world, world)
    data = dataset(world)
    broken = data.records[3]["media_path"]
    with open(broken, "r+b") as f:
        f.truncate(100)
    assert attach_feature_cache(data, encoder, tmp_path / "cache")
    assert isinstance(data[3], BadSample) and data[3].path == broken


def test_model_gives_the_same_losses_from_cached_tokens(small_world, tiny_nodes, tmp_path):
    from vlreg.models.assembly import VisionLanguageModel

    torch.manual_seed(0)
    model = VisionLanguageModel.from_config({"encoder": tiny_nodes["image"], "bridge": tiny_nodes["qformer"],
                                             "losses": [{"name": "blip2_stage1", "itm": 0}]}).eval()
    plain, cached = dataset(small_world), dataset(small_world)
    attach_feature_cache(cached, model.encoder, tmp_path)
    a = collate([plain[i] for i in range(6)])
    b = collate([cached[i] for i in range(6)])
    with torch.no_grad():
        torch.testing.assert_close(model(a)["loss"], model(b)["loss"], rtol=1e-5, atol=1e-5)


def test_a_video_encoder_caches_its_frozen_frames_and_keeps_training_its_temporal_embedding(small_world, tiny_nodes,
                                                                                          tmp_path):
    from vlreg.models.assembly import VisionLanguageModel

    def videos():
        return build("dataset", {"name": "msrvtt_caption", "root": f"{small_world}/msrvtt", "split": "train",
                                 "processor": {"name": "video_eval", "image_size": 32, "num_frames": 2},
                                 "max_samples": 4})

    torch.manual_seed(0)
    model = VisionLanguageModel.from_config({"encoder": tiny_nodes["video"], "bridge": tiny_nodes["qformer"],
                                             "losses": [{"name": "blip2_stage1", "itm": 0, "itg": 0}]}).eval()
    assert model.encoder.frozen_stage() is model.encoder.frame_encoder
    plain, cached = videos(), videos()
    assert attach_feature_cache(cached, model.encoder, tmp_path)
    with torch.no_grad():
        model.encoder.temporal_embedding.normal_()  # trained after the cache was filled
        direct = model.visual_tokens(collate([plain[i] for i in range(4)]))
        from_cache = model.visual_tokens(collate([cached[i] for i in range(4)]))
    torch.testing.assert_close(from_cache.tokens, direct.tokens, rtol=1e-5, atol=1e-5)
    frozen_video = build("encoder", {**tiny_nodes["video"], "frozen": True})
    assert frozen_video.frozen_stage() is frozen_video
    assert cache_key(frozen_video, plain.processor) != cache_key(model.encoder, plain.processor)
