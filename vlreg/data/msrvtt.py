"""MSRVTT captioning, question answering (MSRVTT-QA) and retrieval (the 1k-A protocol).

Layout under ``root`` (an MSRVTT directory as distributed)::

    videos/all/video<N>.mp4
    annotations/train_val_videodatainfo.json   {"videos": [{"video_id": "video0", "split": "train"|"validate", "id"}],
    annotations/test_videodatainfo.json         "sentences": [{"caption", "video_id", "sen_id"}]}
    annotations/msrvtt_qa/{train,val,test}_qa.json   [{"question", "answer", "video_id", "id"}]
    annotations/MSRVTT_JSFUSION_test.csv       key,vid_key,video_id,sentence   (1k-A test: 1,000 videos)
    annotations/MSRVTT_train.9k.csv            video_id                        (1k-A training videos)

MSRVTT-QA's ``video_id`` may be a number (7010, for ``video7010``) or the name.
With the ``npy_features`` processor, ``video<N>.npy`` files are read from ``video_root``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal, Optional

from ..build import component
from ..errors import DataError
from ..registry import register
from .annotations import entry_list, field, load_csv, load_json, resolve
from .base import RecordDataset, RetrievalItems
from .vqav2 import AnswerChoice, AnswerTargets

SPLIT_NAMES = {"train": "train", "val": "validate", "test": "test"}
INFO_FILES = {"train": "train_val_videodatainfo.json", "val": "train_val_videodatainfo.json",
              "test": "test_videodatainfo.json"}


def read_videodatainfo(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``({video_id: split}, {video_id: [captions]})`` from a videodatainfo file, in file order."""
    data = load_json(path)
    videos = {}
    for index, entry in enumerate(entry_list(data, path, "videos")):
        videos[field(entry, "video_id", str, path, index, "videos")] = field(entry, "split", str, path, index, "videos")
    sentences: dict[str, list[str]] = {}
    for index, entry in enumerate(entry_list(data, path, "sentences")):
        video_id = field(entry, "video_id", str, path, index, "sentences")
        sentences.setdefault(video_id, []).append(field(entry, "caption", str, path, index, "sentences"))
    return videos, sentences


def video_name(video_id: Any) -> str:
    """``7010`` or ``"7010"`` -> ``"video7010"``; a name is kept."""
    text = str(video_id)
    return f"video{text}" if text.isdigit() else text


class MsrvttFiles(RecordDataset):
    """Shared by the MSRVTT readers: the directory layout and the video files."""

    def __init__(self, root: str, split: str, processor: Optional[Any], text_processor: Optional[Any],
                 ann_root: Optional[str], video_root: Optional[str], max_samples: Optional[int],
                 max_bad_fraction: float):
        super().__init__(split, processor, text_processor, max_samples, max_bad_fraction)
        self.root = Path(root)
        self.ann_root = resolve(self.root, ann_root, "annotations")
        self.video_root = resolve(self.root, video_root, "videos/all")

    def video_file(self, video_id: str) -> str:
        return self.media_file(self.video_root, f"{video_id}.mp4")

    def pair_records(self, video_ids: list[str], sentences: dict[str, list[str]]) -> list[dict[str, Any]]:
        """One training record per (video, caption), videos in the given order."""
        return self.keep([
            {"media_path": self.video_file(video_id), "text_input": caption, "image_id": video_id}
            for video_id in video_ids for caption in sentences.get(video_id, [])
        ])


@register("dataset", "msrvtt_caption")
class MsrvttCaption(MsrvttFiles):
    """MSRVTT video captioning: video-caption pairs for training, videos with references for evaluation.

    Items. train (one per caption): ``{"video" [T,3,H,W], "text_input": caption,
    "image_id": "video<N>", "media_path"}``. val/test (one per video): ``{"video",
    "image_id": "video<N>", "media_path"}``, with ``references() -> {"video<N>": [captions]}``.

    Args:
        root: the MSRVTT directory (holding ``annotations/`` and ``videos/all/``).
        split: "train", "val" (MSRVTT's "validate") or "test".
        processor: video processor (or npy_features); None for no media.
        text_processor: applied to training captions (e.g. caption).
        ann_root: annotation directory, relative to root or absolute (default "annotations").
        ann_file: the videodatainfo file, relative to ann_root (default train_val_ / test_videodatainfo.json).
        video_root: video directory, relative to root or absolute (default "videos/all").
        max_samples: keep the first N records (captions for train, videos for val/test).
        max_bad_fraction: the largest share of bad video files tolerated per epoch.
    """

    def __init__(self, root: str, split: Literal["train", "val", "test"] = "train",
                 processor: Optional[component("processor")] = None,
                 text_processor: Optional[component("processor")] = None, ann_root: Optional[str] = None,
                 ann_file: Optional[str] = None, video_root: Optional[str] = None,
                 max_samples: Optional[int] = None, max_bad_fraction: float = 0.05):
        super().__init__(root, split, processor, text_processor, ann_root, video_root, max_samples, max_bad_fraction)
        self.ann_file = resolve(self.ann_root, ann_file, INFO_FILES[split])
        videos, sentences = read_videodatainfo(self.ann_file)
        video_ids = [v for v, s in videos.items() if s == SPLIT_NAMES[split]]
        if not video_ids:
            raise DataError(f"{self.ann_file}: no videos with split {SPLIT_NAMES[split]!r}")
        self.training = split == "train"
        if self.training:
            self.records = self.pair_records(video_ids, sentences)
        else:
            video_ids = self.keep(video_ids)
            missing = [v for v in video_ids if not sentences.get(v)]
            if missing:
                raise DataError(f"{self.ann_file}: no sentences for {len(missing)} {split} videos, e.g. {missing[0]}")
            self.records = [{"media_path": self.video_file(v), "image_id": v} for v in video_ids]
        self._sentences = {v: sentences.get(v, []) for v in video_ids}

    def captions(self) -> list[str]:
        """Every caption of the split's videos, raw (for text-only corpora)."""
        return [caption for captions in self._sentences.values() for caption in captions]

    def references(self) -> dict[str, list[str]]:
        """``{"video<N>": [reference captions]}`` of the evaluation videos (raw captions)."""
        return {record["image_id"]: self._sentences[record["image_id"]] for record in self.records}


@register("dataset", "msrvtt_qa")
class MsrvttQA(AnswerTargets, MsrvttFiles):
    """MSRVTT-QA: open-ended questions on MSRVTT videos with one-word answers.

    Items. Training: ``{"video" [T,3,H,W], "text_input": question, "text_output": answer,
    "answers": [answer], "weights": [1.0], "question_id", "media_path"}``.
    Evaluation: ``{"video", "text_input", "question_id", "media_path"}``; the dataset
    exposes ``ground_truth() -> {question_id: answer}`` and ``answer_list`` (the
    file's when present, else the training answers, most frequent first).

    Args:
        root: the MSRVTT directory.
        split: "train", "val" or "test" (file annotations/msrvtt_qa/<split>_qa.json).
        processor: video processor (or npy_features); None for no media.
        text_processor: applied to questions (e.g. question).
        training: training items (default: for split "train").
        ann_root: annotation directory, relative to root or absolute (default "annotations").
        ann_file: the QA file, relative to ann_root (default msrvtt_qa/<split>_qa.json).
        answer_list_file: candidate answers, relative to ann_root (default msrvtt_qa/answer_list.json).
        video_root: video directory, relative to root or absolute (default "videos/all").
        max_samples: keep the first N questions.
        max_bad_fraction: the largest share of bad video files tolerated per epoch.
    """

    def __init__(self, root: str, split: Literal["train", "val", "test"] = "train",
                 processor: Optional[component("processor")] = None,
                 text_processor: Optional[component("processor")] = None, training: Optional[bool] = None,
                 ann_root: Optional[str] = None, ann_file: Optional[str] = None,
                 answer_list_file: Optional[str] = None, video_root: Optional[str] = None,
                 max_samples: Optional[int] = None, max_bad_fraction: float = 0.05):
        super().__init__(root, split, processor, text_processor, ann_root, video_root, max_samples, max_bad_fraction)
        self.training = split == "train" if training is None else training
        self.answer_choice: AnswerChoice = "most_common"
        self.ann_file = resolve(self.ann_root, ann_file, f"msrvtt_qa/{split}_qa.json")
        self.answer_list_file = resolve(self.ann_root, answer_list_file, "msrvtt_qa/answer_list.json")
        self._answers: dict[int, str] = {}
        self._answer_list: Optional[list[str]] = None
        for index, entry in enumerate(entry_list(load_json(self.ann_file), self.ann_file)):
            question_id = field(entry, "id", int, self.ann_file, index)
            answer = field(entry, "answer", str, self.ann_file, index)
            record = {
                "media_path": self.video_file(video_name(field(entry, "video_id", (int, str), self.ann_file, index))),
                "text_input": field(entry, "question", str, self.ann_file, index),
                "question_id": question_id,
            }
            if self.training:
                record.update(answers=[answer], weights=[1.0])
            self._answers[question_id] = answer
            self.records.append(record)
        self.records = self.keep(self.records)

    def ground_truth(self) -> dict[int, str]:
        """``{question_id: answer}`` of the kept questions."""
        return {record["question_id"]: self._answers[record["question_id"]] for record in self.records}

    @property
    def answer_list(self) -> list[str]:
        """Candidate answers for rank-based inference."""
        if self._answer_list is None:
            if self.answer_list_file.is_file():
                data = load_json(self.answer_list_file, "answer list")
                if not isinstance(data, list) or not all(isinstance(a, str) for a in data):
                    raise DataError(f"{self.answer_list_file}: expected a JSON list of answer strings")
            else:
                train = self.ann_file.with_name("train_qa.json")
                counts = Counter(field(e, "answer", str, train, i) for i, e in enumerate(entry_list(load_json(train), train)))
                data = [answer for answer, _ in counts.most_common()]
            self._answer_list = data
        return self._answer_list


@register("dataset", "msrvtt_retrieval")
class MsrvttRetrieval(RetrievalItems, MsrvttFiles):
    """MSRVTT text-video retrieval, 1k-A protocol: 9k training videos, 1k test videos with one sentence each.

    Items. test: ``{"video" [T,3,H,W], "index": i, "media_path"}`` per test video, with
    ``texts`` (the JSFUSION sentences), ``txt2media`` and ``media2txt``.
    train: video-caption pairs of the 9k videos like msrvtt_caption's training items
    (captions from both videodatainfo files).

    Args:
        root: the MSRVTT directory.
        split: "test" (MSRVTT_JSFUSION_test.csv) or "train" (MSRVTT_train.9k.csv).
        processor: video processor (or npy_features); None for no media.
        text_processor: applied to the sentences (e.g. caption).
        ann_root: annotation directory, relative to root or absolute (default "annotations").
        ann_file: the split's CSV file, relative to ann_root.
        video_root: video directory, relative to root or absolute (default "videos/all").
        max_samples: keep the first N videos (test) or pairs (train).
        max_bad_fraction: the largest share of bad video files tolerated per epoch.
    """

    def __init__(self, root: str, split: Literal["train", "test"] = "test",
                 processor: Optional[component("processor")] = None,
                 text_processor: Optional[component("processor")] = None, ann_root: Optional[str] = None,
                 ann_file: Optional[str] = None, video_root: Optional[str] = None,
                 max_samples: Optional[int] = None, max_bad_fraction: float = 0.05):
        super().__init__(root, split, processor, text_processor, ann_root, video_root, max_samples, max_bad_fraction)
        if split == "test":
            self.ann_file = resolve(self.ann_root, ann_file, "MSRVTT_JSFUSION_test.csv")
            grouped: dict[str, list[str]] = {}
            for row in load_csv(self.ann_file, ("video_id", "sentence")):
                grouped.setdefault(row["video_id"], []).append(row["sentence"])
            kept = self.keep(list(grouped))
            self.index_media([(self.video_file(v), grouped[v]) for v in kept])
        else:
            self.ann_file = resolve(self.ann_root, ann_file, "MSRVTT_train.9k.csv")
            video_ids = [row["video_id"] for row in load_csv(self.ann_file, ("video_id",))]
            sentences: dict[str, list[str]] = {}
            for name in ("train_val_videodatainfo.json", "test_videodatainfo.json"):
                if (self.ann_root / name).is_file():
                    for video_id, captions in read_videodatainfo(self.ann_root / name)[1].items():
                        sentences.setdefault(video_id, []).extend(captions)
            missing = [v for v in video_ids if not sentences.get(v)]
            if missing:
                raise DataError(f"{self.ann_file}: {len(missing)} videos have no sentences in the "
                                f"videodatainfo files of {self.ann_root}, e.g. {missing[0]}")
            self.records = self.pair_records(video_ids, sentences)
