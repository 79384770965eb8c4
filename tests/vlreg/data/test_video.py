"""Video decoding and frame sampling, on mp4 files whose frames show their own index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vlreg  # noqa: F401  (the torchvision guard, before anything imports it)
from vlreg import create
from vlreg.data.media import BadMedia
from vlreg.data.processors import CLIP_MEAN, CLIP_STD
from vlreg.data.video import frame_indices, read_frames

STEP = 16  # frame i is a flat grey of level 16 + 16 i


def write_counting_video(path, num_frames: int, codec: str = "libx264", size=(40, 24)) -> str:
    """An mp4 whose frame i is a flat grey of level 16 + 16 i (decodes back to i)."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"crf": "10"} if codec == "libx264" else {"qscale": "2"}
        for i in range(num_frames):
            pixels = np.full((size[1], size[0], 3), STEP + STEP * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return str(path)


def write_silence(path):
    """An mp4 with an audio stream and no video stream."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for _ in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def decoded_indices(frames: np.ndarray) -> list[int]:
    """The frame index each decoded frame shows."""
    levels = frames.reshape(len(frames), -1).mean(axis=1)
    return [int(round((level - STEP) / STEP)) for level in levels]


@pytest.fixture(scope="module", params=["libx264", "mpeg4"])
def video12(request, tmp_path_factory):
    return write_counting_video(tmp_path_factory.mktemp("video") / f"count12_{request.param}.mp4", 12, request.param)


@pytest.fixture(scope="module")
def video3(tmp_path_factory):
    return write_counting_video(tmp_path_factory.mktemp("video") / "count3.mp4", 3)


# -- which frames --------------------------------------------------------------

def test_uniform_takes_segment_middles():
    assert frame_indices(12, 4, "uniform") == [1, 4, 7, 10]
    assert frame_indices(10, 4, "uniform") == [0, 3, 5, 8]  # segments [0,2) [2,5) [5,7) [7,10)
    assert frame_indices(100, 1, "uniform") == [49]
    assert frame_indices(8, 8, "uniform") == list(range(8))


@pytest.mark.parametrize("sampling", ["uniform", "random", "headtail"])
def test_short_videos_repeat_their_last_frame(sampling):
    assert frame_indices(3, 5, sampling) == [0, 1, 2, 2, 2]
    assert frame_indices(1, 4, sampling) == [0, 0, 0, 0]


def test_random_draws_one_frame_per_segment_and_covers_each_segment():
    generator = torch.Generator().manual_seed(0)
    seen = [set() for _ in range(4)]
    for _ in range(200):
        indices = frame_indices(12, 4, "random", generator)
        for segment, index in enumerate(indices):
            assert 3 * segment <= index < 3 * segment + 3
            seen[segment].add(index)
    assert seen == [{0, 1, 2}, {3, 4, 5}, {6, 7, 8}, {9, 10, 11}]


def test_headtail_draws_half_from_each_half():
    generator = torch.Generator().manual_seed(0)
    heads, tails = set(), set()
    for _ in range(200):
        indices = frame_indices(13, 5, "headtail", generator)
        head, tail = indices[:3], indices[3:]
        assert head == sorted(set(head)) and tail == sorted(set(tail))
        assert all(i < 7 for i in head) and all(7 <= i < 13 for i in tail)
        heads.update(head)
        tails.update(tail)
    assert heads == set(range(7)) and tails == set(range(7, 13))


def test_random_sampling_is_seeded_by_torch():
    torch.manual_seed(3)
    first = [frame_indices(50, 8, "random") for _ in range(3)]
    torch.manual_seed(3)
    assert [frame_indices(50, 8, "random") for _ in range(3)] == first
    assert len({tuple(f) for f in first}) > 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="sampling must be one of"):
        frame_indices(10, 2, "middle")
    with pytest.raises(ValueError, match="at least one frame"):
        frame_indices(0, 2)


# -- decoding ------------------------------------------------------------------

def test_decoded_frames_are_the_sampled_ones(video12):
    frames = read_frames(video12, 4, "uniform")
    assert frames.shape == (4, 24, 40, 3) and frames.dtype == np.uint8
    assert decoded_indices(frames) == [1, 4, 7, 10]
    assert decoded_indices(read_frames(video12, 12)) == list(range(12))
    for sampling in ("random", "headtail"):
        expected = frame_indices(12, 6, sampling, torch.Generator().manual_seed(5))
        frames = read_frames(video12, 6, sampling, generator=torch.Generator().manual_seed(5))
        assert decoded_indices(frames) == expected


def test_short_video_is_padded_with_its_last_frame(video3):
    assert decoded_indices(read_frames(video3, 6, "random")) == [0, 1, 2, 2, 2, 2]


@pytest.mark.parametrize("width", [20, 48])  # decord outputs 20 px directly; 48 via 64 px and a resize
def test_resize_at_decode_time(video12, width):
    frames = read_frames(video12, 2, width=width, height=10)
    assert frames.shape == (2, 10, width, 3)
    assert decoded_indices(frames) == [2, 8]


def test_video_processors_shape_and_normalisation(video12):
    processor = create("processor", {"name": "video_eval", "image_size": 16, "num_frames": 3})
    video = processor(video12)
    assert video.shape == (3, 3, 16, 16) and video.dtype == torch.float32
    frames = read_frames(video12, 3, width=16, height=16)  # 16 px: decoded at 32 and resized (decord's gap)
    assert decoded_indices(frames) == [1, 5, 9]  # segment middles of 12 / 3
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    expected = (torch.from_numpy(frames).permute(0, 3, 1, 2) / 255 - mean) / std
    assert torch.allclose(video, expected, atol=1e-6)
    # flat greys of level 16 + 16 i, give or take the codec's rounding
    for t, level in enumerate((32, 96, 160)):
        grey = (level / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
        assert torch.allclose(video[t].mean(dim=(1, 2)), grey, atol=0.1), (t, video[t].mean(dim=(1, 2)))
    train = create("processor", {"name": "video_train", "image_size": 16, "num_frames": 4})
    assert train.sampling == "random" and processor.sampling == "uniform"
    assert train(video12).shape == (4, 3, 16, 16)


def test_bad_videos_raise_bad_media(tmp_path, video12):
    data = open(video12, "rb").read()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    not_video = tmp_path / "picture.mp4"
    not_video.write_bytes(b"\xff\xd8\xff\xe0 this is not a video" * 20)
    cases = {truncated: "cannot open video", empty: "empty file", not_video: "cannot open video",
             write_silence(tmp_path / "sound.mp4"): "cannot find video stream", tmp_path / "missing.mp4": "file not found"}
    processor = create("processor", {"name": "video_eval", "image_size": 16, "num_frames": 2})
    for path, reason in cases.items():
        with pytest.raises(BadMedia) as err:
            processor(str(path))
        assert err.value.path == str(path) and reason in err.value.reason, (path, err.value.reason)
