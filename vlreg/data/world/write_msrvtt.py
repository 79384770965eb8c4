"""MSRVTT in its official files: videos, captions, MSRVTT-QA and the 1k-A retrieval split.

::

    msrvtt/videos/all/video0.mp4 ...                          H.264 (or MPEG-4 part 2) clips
    msrvtt/annotations/train_val_videodatainfo.json           train and validate videos and their sentences
    msrvtt/annotations/test_videodatainfo.json                test videos and their sentences
        {"info", "videos": [{"category", "url", "video_id", "start time", "end time", "split", "id"}],
         "sentences": [{"caption", "video_id", "sen_id"}]}
    msrvtt/annotations/msrvtt_qa/{train,val,test}_qa.json     [{"question", "answer", "video_id": int, "id"}]
    msrvtt/annotations/MSRVTT_JSFUSION_test.csv               key,vid_key,video_id,sentence (the 1k-A test)
    msrvtt/annotations/MSRVTT_train.9k.csv                    video_id (the 1k-A training videos)

A video's ``category`` is its event (0 moves, 1 appears, 2 changes colour), its ``url`` a
placeholder. Sentence ids run over both videodatainfo files; QA ids over the three QA
files. The 1k-A test set is the test split with one caption per video; its training set
is every other video.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .plan import Clip, stream
from .scenes import EVENTS, render_clip
from .writing import write_json

INFO = {"contributor": "vlreg", "data_created": "", "version": "1.0",
        "description": "vlreg synthetic world: MSRVTT-style clips of generated scenes", "year": ""}
QA_SPLITS = {"train": "train", "validate": "val", "test": "test"}


# RGB to Y'CbCr, ITU-R BT.601 with studio ranges (Y 16-235, Cb and Cr 16-240): what decoders assume for yuv420p
_BT601 = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
_OFFSET = np.array([16.0, 128.0, 128.0])


def to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """An RGB frame ``[H, W, 3]`` uint8 (H, W even) as planar 4:2:0 ``[H * 3 // 2, W]`` uint8 (Y, then Cb, then Cr).

    Converting here, rather than in the encoder's scaler, keeps the conversion exact and
    the same on every machine.
    """
    h, w = frame.shape[:2]
    ycc = frame.astype(np.float64) @ _BT601.T + _OFFSET
    chroma = ycc[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))  # average each 2x2 block
    planes = [ycc[..., 0], chroma[..., 0], chroma[..., 1]]
    return np.concatenate([np.clip(np.rint(p), 0, 255).astype(np.uint8).reshape(-1) for p in planes]).reshape(-1, w)


def write_video(path: Path, frames: list[np.ndarray], fps: int, codec: str = "libx264") -> None:
    """Encode RGB frames ``[H, W, 3]`` uint8 (H, W even) as an MP4 file, the same bytes every time."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.thread_count = 1
        if codec == "libx264":
            # constant quantiser: x264's rate control (crf, mb-tree) gave different bytes from run to run
            video.options = {"qp": "18", "x264-params": "threads=1:sync-lookahead=0"}
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(to_yuv420p(frame), format="yuv420p")))
        container.mux(video.encode())


def video_entry(clip: Clip, duration: float) -> dict:
    return {"category": EVENTS.index(clip.scene.event), "url": f"https://vlreg.invalid/world/{clip.video_id}",
            "video_id": clip.video_id, "start time": 0.0, "end time": duration, "split": clip.split,
            "id": clip.number}


def write(root: Path, clips: dict[str, list[Clip]], side: int, num_frames: int, fps: int, seed: int,
          codec: str = "libx264") -> dict[str, str]:
    """Videos and annotation files; returns their paths by name, relative to ``root``."""
    videos, ann = root / "msrvtt" / "videos" / "all", root / "msrvtt" / "annotations"
    every = [c for split in ("train", "validate", "test") for c in clips[split]]
    for clip in every:
        write_video(videos / clip.file, render_clip(clip.scene, side, num_frames), fps, codec)

    duration = round(num_frames / fps, 2)
    sen_id = 0
    for name, group in (("train_val", clips["train"] + clips["validate"]), ("test", clips["test"])):
        sentences = []
        for clip in group:
            for text in clip.captions:
                sentences.append({"caption": text, "video_id": clip.video_id, "sen_id": sen_id})
                sen_id += 1
        write_json(ann / f"{name}_videodatainfo.json",
                   {"info": INFO, "videos": [video_entry(c, duration) for c in group], "sentences": sentences})

    qa_id = 0
    for split, qa_name in QA_SPLITS.items():
        entries = []
        for clip in clips[split]:
            for q in clip.questions:
                entries.append({"question": q.question, "answer": q.answer, "video_id": clip.number, "id": qa_id})
                qa_id += 1
        write_json(ann / "msrvtt_qa" / f"{qa_name}_qa.json", entries)

    rng = stream(seed, "shuffle", "", 1)  # which of a test video's captions the 1k-A split keeps
    with open(ann / "MSRVTT_JSFUSION_test.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        for k, clip in enumerate(clips["test"]):
            text = clip.captions[int(rng.integers(len(clip.captions)))]
            writer.writerow([f"ret{k}", f"msr{clip.number}", clip.video_id, text])
    with open(ann / "MSRVTT_train.9k.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["video_id"])
        writer.writerows([c.video_id] for c in clips["train"] + clips["validate"])

    rel = "msrvtt/annotations"
    return {"msrvtt_videos": "msrvtt/videos/all",
            "msrvtt_train_val": f"{rel}/train_val_videodatainfo.json",
            "msrvtt_test": f"{rel}/test_videodatainfo.json",
            **{f"msrvtt_qa_{n}": f"{rel}/msrvtt_qa/{n}_qa.json" for n in QA_SPLITS.values()},
            "msrvtt_1ka_test": f"{rel}/MSRVTT_JSFUSION_test.csv",
            "msrvtt_1ka_train": f"{rel}/MSRVTT_train.9k.csv"}
