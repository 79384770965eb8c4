"""Image, feature and text processors: shapes, normalisation numbers, randomness, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vlreg  # noqa: F401  (the torchvision guard, before anything imports it)
from vlreg import create
from vlreg.data.media import BadMedia
from vlreg.data.processors import CLIP_MEAN, CLIP_STD
from vlreg.errors import ConfigError, UnknownComponentError

MEAN, STD = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)


def two_halves(path, size=(40, 30)) -> str:
    """A PNG whose left half is red and right half blue."""
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[:, : size[0] // 2] = (255, 0, 0)
    pixels[:, size[0] // 2:] = (0, 0, 255)
    Image.fromarray(pixels).save(path)
    return str(path)


def normalised(rgb) -> torch.Tensor:
    return (torch.tensor(rgb, dtype=torch.float32) / 255 - MEAN) / STD


@pytest.fixture
def halves(tmp_path):
    return two_halves(tmp_path / "halves.png")


def test_clip_constants():
    assert CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert CLIP_STD == (0.26862954, 0.26130258, 0.27577711)


def test_image_eval_resizes_and_normalises_exactly(tmp_path):
    path = tmp_path / "flat.png"
    Image.new("RGB", (50, 20), (255, 128, 0)).save(path)
    image = create("processor", {"name": "image_eval", "image_size": 24})(str(path))
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32
    assert torch.allclose(image, normalised((255, 128, 0)).view(3, 1, 1).expand(3, 24, 24), atol=1e-6)
    assert image[0, 0, 0].item() == pytest.approx((1.0 - 0.48145466) / 0.26862954, abs=1e-6)


def test_image_eval_keeps_layout_and_takes_bytes(halves):
    processor = create("processor", {"name": "image_eval", "image_size": 16})
    image = processor(halves)
    assert torch.allclose(image[:, :, 0], normalised((255, 0, 0)).view(3, 1), atol=1e-5)   # left: red
    assert torch.allclose(image[:, :, -1], normalised((0, 0, 255)).view(3, 1), atol=1e-5)  # right: blue
    assert torch.equal(processor(open(halves, "rb").read()), image)


def test_grey_and_alpha_images_become_rgb(tmp_path):
    Image.new("L", (8, 8), 200).save(tmp_path / "grey.png")
    Image.new("RGBA", (8, 8), (10, 20, 30, 40)).save(tmp_path / "alpha.png")
    processor = create("processor", {"name": "image_eval", "image_size": 8})
    assert torch.allclose(processor(str(tmp_path / "grey.png"))[:, 0, 0], normalised((200, 200, 200)), atol=1e-6)
    assert torch.allclose(processor(str(tmp_path / "alpha.png"))[:, 0, 0], normalised((10, 20, 30)), atol=1e-6)


def test_image_train_flips_half_the_time_and_is_seeded(halves):
    full = {"name": "image_train", "image_size": 16, "scale": [1.0, 1.0], "ratio": [1.0, 1.0]}
    processor = create("processor", full)
    plain = create("processor", {"name": "image_eval", "image_size": 16})(halves)
    flipped = plain.flip(-1)
    torch.manual_seed(0)
    outputs = [processor(halves) for _ in range(200)]
    n_flipped = sum(torch.allclose(o, flipped, atol=1e-5) for o in outputs)
    assert sum(torch.allclose(o, plain, atol=1e-5) for o in outputs) + n_flipped == 200
    assert 70 < n_flipped < 130
    torch.manual_seed(0)
    assert all(torch.equal(processor(halves), o) for o in outputs[:10])

    no_flip = create("processor", {**full, "hflip": False})
    assert all(torch.allclose(no_flip(halves), plain, atol=1e-5) for _ in range(30))


def test_random_resized_crop_boxes_follow_scale_and_ratio():
    processor = create("processor", {"name": "image_train", "image_size": 8, "scale": [0.25, 0.5],
                                    "ratio": [0.5, 2.0]})
    torch.manual_seed(0)
    boxes = [processor.crop_box(200, 100) for _ in range(300)]
    for left, top, right, bottom in boxes:
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 200 and 0 <= top < bottom <= 100
        assert 0.24 <= w * h / 20000 <= 0.51 and 0.48 <= w / h <= 2.05
    assert len({b[0] for b in boxes}) > 50  # positions vary
    # a crop that cannot fit falls back to the whole image
    tall = create("processor", {"name": "image_train", "image_size": 8, "scale": [1.0, 1.0], "ratio": [4.0, 4.0]})
    assert tall.crop_box(10, 10) == (0, 0, 10, 10)


def test_image_train_output(halves):
    image = create("processor", {"name": "image_train", "image_size": 12})(halves)
    assert image.shape == (3, 12, 12) and image.dtype == torch.float32
    with pytest.raises(ConfigError, match="scale must satisfy"):
        create("processor", {"name": "image_train", "scale": [0.5, 1.5]})


def test_bad_images_raise_bad_media(tmp_path, halves):
    jpeg = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg, quality=95)
    data = jpeg.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    processor = create("processor", {"name": "image_eval", "image_size": 8})
    assert processor(str(jpeg)).shape == (3, 8, 8)
    cases = {"truncated.jpg": "cannot decode", "empty.jpg": "not a readable image", "text.jpg": "not a readable image",
             "missing.jpg": "file not found"}
    for name, reason in cases.items():
        with pytest.raises(BadMedia) as err:
            processor(str(tmp_path / name))
        assert reason in err.value.reason and err.value.path.endswith(name), (name, err.value)
    with pytest.raises(BadMedia, match="<bytes>: cannot decode"):
        processor(data[: len(data) // 2])


# -- pre-extracted features ------------------------------------------------------

def test_npy_features_pad_truncate_and_mask(tmp_path):
    processor = create("processor", {"name": "npy_features", "max_tokens": 4, "dim": 3})
    assert processor.modality == "features" and processor.suffix == ".npy"
    short = np.arange(6, dtype=np.float64).reshape(2, 3)
    np.save(tmp_path / "short.npy", short)
    features, mask = processor(str(tmp_path / "short.npy"))
    assert features.dtype == torch.float32 and features.shape == (4, 3)
    assert torch.equal(features[:2], torch.tensor(short, dtype=torch.float32)) and not features[2:].any()
    assert mask.tolist() == [True, True, False, False]

    long = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
    np.save(tmp_path / "long.npy", long)
    fields = processor.fields(str(tmp_path / "long.npy"))
    assert torch.equal(fields["features"], torch.from_numpy(long[:4])) and fields["features_mask"].all()

    np.save(tmp_path / "one.npy", np.ones(3))
    assert processor(str(tmp_path / "one.npy"))[1].tolist() == [True, False, False, False]


def test_bad_feature_files(tmp_path):
    processor = create("processor", {"name": "npy_features", "max_tokens": 4, "dim": 3})
    np.save(tmp_path / "wide.npy", np.ones((2, 5)))
    np.save(tmp_path / "cube.npy", np.ones((2, 3, 3)))
    np.save(tmp_path / "none.npy", np.ones((0, 3)))
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    cases = {"wide.npy": "expected feature width 3", "cube.npy": "expected numeric features [T, D]",
             "none.npy": "with T >= 1", "junk.npy": "not a readable .npy file", "missing.npy": "file not found"}
    for name, reason in cases.items():
        with pytest.raises(BadMedia) as err:
            processor(str(tmp_path / name))
        assert reason in err.value.reason, (name, err.value.reason)


# -- text --------------------------------------------------------------------------

def test_caption_cleaning_matches_blip():
    caption = create("processor", {"name": "caption"})
    assert caption("A Dog, running!") == "a dog, running"
    assert caption('  The "big" (red) ball:   on;the~grass.  \n') == "the big red ball on the grass"
    assert caption("it's a t-shirt #1*") == "it's a t-shirt 1"
    short = create("processor", {"name": "caption", "max_words": 3, "prompt": "a photo of "})
    assert short("One two three four five") == "a photo of one two three"


def test_question_formatting():
    question = create("processor", {"name": "question"})
    assert question("What color is the Ball?") == "what color is the ball?"
    assert question("What's on the t-shirt... (left)!") == "what's on the t-shirt left"
    templated = create("processor", {"name": "question", "template": "Question: {} Short answer:", "max_words": 4})
    assert templated("  How many  shapes are there in it? ") == "Question: how many shapes are Short answer:"
    with pytest.raises(ConfigError, match="must contain one"):
        create("processor", {"name": "question", "template": "Question:"})


def test_processor_names_are_registered():
    for name in ("image_train", "image_eval", "video_train", "video_eval", "npy_features", "caption", "question"):
        assert vlreg.registry("processor").summary(name)
    with pytest.raises(UnknownComponentError, match="did you mean 'image_eval'"):
        create("processor", {"name": "image_evl"})
