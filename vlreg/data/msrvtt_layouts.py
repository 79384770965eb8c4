"""The layouts MSRVTT comes in, each read into the same videos, sentences and questions.

A layout says which file it reads first for a task and split (:meth:`MsrvttLayout.key_file`,
None where it has no files for the task) and reads, from the dataset directory ``root``:

- ``captions(root, split)``: ``{video_id: [captions]}`` of "train", "val" (MSRVTT's
  "validate") or "test", videos in file order;
- ``questions(root, split)``: MSRVTT-QA's questions of a split, as :class:`Question`;
- ``retrieval(root, split)``: the 1k-A protocol as ``[(video_id, [sentences])]``:
  "train" the 9k training videos with all their captions, "test" the 1,000 JSFusion
  test videos with one sentence each;
- ``answer_list(root)``: the candidate answers the layout ships, or None.

Video ids are MSRVTT's names (``video7010``); a video's file is ``<video_id>.mp4`` in one
of the layout's ``video_folders``. The trees are drawn in ``vlreg/data/README.md``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Optional

from ..errors import DataError
from .annotations import entry_list, field, load_csv, load_json, load_lines, load_pickle, string_list

Task = Literal["caption", "qa", "retrieval"]
LayoutName = Literal["vlreg", "official", "clip4clip", "lavis", "frozen", "msrvtt_qa"]
SPLIT_NAMES = {"train": "train", "val": "validate", "test": "test"}
JSFUSION_TEST, TRAIN_9K = "MSRVTT_JSFUSION_test.csv", "MSRVTT_train.9k.csv"
Videos = dict[str, list[str]]


@dataclass(frozen=True)
class Question:
    """One MSRVTT-QA question about a video, with its one answer."""

    question_id: int | str
    video_id: str
    question: str
    answer: str


def video_name(video_id: Any) -> str:
    """``7010`` or ``"7010"`` -> ``"video7010"``; a name is kept."""
    text = str(video_id)
    return f"video{text}" if text.isdigit() else text


def read_videodatainfo(path: str | os.PathLike) -> tuple[dict[str, str], Videos]:
    """``({video_id: split}, {video_id: [captions]})`` from a file in the official videodatainfo format."""
    data = load_json(path)
    videos = {}
    for index, entry in enumerate(entry_list(data, path, "videos")):
        videos[field(entry, "video_id", str, path, index, "videos")] = field(entry, "split", str, path, index, "videos")
    sentences: Videos = {}
    for index, entry in enumerate(entry_list(data, path, "sentences")):
        video_id = field(entry, "video_id", str, path, index, "sentences")
        sentences.setdefault(video_id, []).append(field(entry, "caption", str, path, index, "sentences"))
    return videos, sentences


def read_msrvtt_qa(path: str | os.PathLike) -> list[Question]:
    """MSRVTT-QA's format: ``[{"question", "answer", "video_id": 7010 or "video7010", "id"}]``."""
    return [Question(field(entry, "id", int, path, index), video_name(field(entry, "video_id", (int, str), path, index)),
                     field(entry, "question", str, path, index), field(entry, "answer", str, path, index))
            for index, entry in enumerate(entry_list(load_json(path), path))]


def read_jsfusion(path: str | os.PathLike) -> list[tuple[str, list[str]]]:
    """The JSFusion 1k-A test list (``key,vid_key,video_id,sentence``) as ``[(video_id, [sentences])]``."""
    grouped: Videos = {}
    for row in load_csv(path, ("video_id", "sentence")):
        grouped.setdefault(row["video_id"], []).append(row["sentence"])
    return list(grouped.items())


def with_sentences(video_ids: list[str], sentences: Videos, list_file: Path, source: str) -> list[tuple[str, list[str]]]:
    """``[(video_id, [captions])]`` of a list of videos; a video without captions in ``source`` is a DataError."""
    missing = [v for v in video_ids if not sentences.get(v)]
    if missing:
        raise DataError(f"{list_file}: {len(missing)} videos have no sentences in {source}, e.g. {missing[0]}")
    return [(v, sentences[v]) for v in video_ids]


def split_videos(videos: dict[str, str], sentences: Videos, split: str) -> Videos:
    """The videos of one split (videodatainfo's "train", "validate", "test") with their captions."""
    return {v: sentences.get(v, []) for v, s in videos.items() if s == SPLIT_NAMES[split]}


def answers_by_frequency(questions: list[Question]) -> list[str]:
    """Distinct answers, most frequent first (ties in order of appearance)."""
    counts: dict[str, int] = {}
    for question in questions:
        counts[question.answer] = counts.get(question.answer, 0) + 1
    return sorted(counts, key=lambda answer: -counts[answer])


class MsrvttLayout:
    """A way MSRVTT lies on disk. Subclasses read the tasks whose ``key_file`` is not None."""

    name: str = ""
    video_folders: tuple[str, ...] = ()

    def key_file(self, task: Task, split: str) -> Optional[str]:
        raise NotImplementedError

    def captions(self, root: Path, split: str) -> Videos:
        raise NotImplementedError

    def questions(self, root: Path, split: str) -> list[Question]:
        raise NotImplementedError

    def retrieval(self, root: Path, split: str) -> list[tuple[str, list[str]]]:
        raise NotImplementedError

    def answer_list(self, root: Path) -> Optional[list[str]]:
        return None


class MsrvttQAFiles(MsrvttLayout):
    """MSRVTT-QA as released (Xu et al., 2017): ``{train,val,test}_qa.json`` in ``qa_folder``; the
    candidate answers are ``answer_list.json`` there when present, else the training answers."""

    def __init__(self, name: str, qa_folder: str, video_folders: tuple[str, ...]):
        self.name, self.qa_folder, self.video_folders = name, qa_folder, video_folders

    def qa_file(self, split: str) -> str:
        return str(PurePosixPath(self.qa_folder, f"{split}_qa.json"))

    def key_file(self, task: Task, split: str) -> Optional[str]:
        return self.qa_file(split) if task == "qa" else None

    def questions(self, root: Path, split: str) -> list[Question]:
        return read_msrvtt_qa(root / self.qa_file(split))

    def answer_list(self, root: Path) -> Optional[list[str]]:
        path = root / self.qa_folder / "answer_list.json"
        if path.is_file():
            data = load_json(path, "answer list")
            if not isinstance(data, list) or not all(isinstance(a, str) for a in data):
                raise DataError(f"{path}: expected a JSON list of answer strings")
            return data
        return answers_by_frequency(self.questions(root, "train"))


class VideoDataInfo(MsrvttQAFiles):
    """Layouts around the official videodatainfo files: captions of each split from ``info_files``,
    the 1k-A lists as JSFusion's CSV files in ``split_folder``, 9k training sentences from every
    file in ``info_files``; MSRVTT-QA in ``qa_folder`` when it is not None."""

    def __init__(self, name: str, info_files: dict[str, str], split_folder: str, qa_folder: Optional[str],
                 video_folders: tuple[str, ...]):
        super().__init__(name, qa_folder or "", video_folders)
        self.info_files, self.split_folder, self.has_qa = info_files, split_folder, qa_folder is not None

    def key_file(self, task: Task, split: str) -> Optional[str]:
        if task == "qa":
            return super().key_file(task, split) if self.has_qa else None
        return self.info_files[split]

    def captions(self, root: Path, split: str) -> Videos:
        return split_videos(*read_videodatainfo(root / self.info_files[split]), split)

    def retrieval(self, root: Path, split: str) -> list[tuple[str, list[str]]]:
        if split == "test":
            return read_jsfusion(root / self.split_folder / JSFUSION_TEST)
        list_file = root / self.split_folder / TRAIN_9K
        video_ids = [row["video_id"] for row in load_csv(list_file, ("video_id",))]
        files = list(dict.fromkeys(self.info_files.values()))
        sentences: Videos = {}
        for name in files:
            for video_id, captions in read_videodatainfo(root / name)[1].items():
                sentences.setdefault(video_id, []).extend(captions)
        return with_sentences(video_ids, sentences, list_file, " and ".join(str(root / name) for name in files))


class Lavis(MsrvttLayout):
    """LAVIS's preprocessed annotations: JSON lists whose entries name their video as ``"video": "videoN.mp4"``.

    ``cap_<split>.json`` and ``retrieval_<split>.json``: ``{"video", "caption"}``, a caption string
    per entry (training) or a list of them per video (evaluation); ``qa_<split>.json``:
    ``{"video", "question", "answer", "question_id"}``; ``qa_ans2label.json``: ``{answer: label}``.
    """

    name, video_folders = "lavis", ("videos",)
    FILES = {"caption": "cap", "qa": "qa", "retrieval": "retrieval"}

    def key_file(self, task: Task, split: str) -> Optional[str]:
        return f"annotations/{self.FILES[task]}_{split}.json"

    def grouped(self, path: Path) -> Videos:
        videos: Videos = {}
        for index, entry in enumerate(entry_list(load_json(path), path)):
            video_id = PurePosixPath(field(entry, "video", str, path, index)).stem
            videos.setdefault(video_id, []).extend(string_list(entry, "caption", path, index))
        return videos

    def captions(self, root: Path, split: str) -> Videos:
        return self.grouped(root / self.key_file("caption", split))

    def retrieval(self, root: Path, split: str) -> list[tuple[str, list[str]]]:
        return list(self.grouped(root / self.key_file("retrieval", split)).items())

    def questions(self, root: Path, split: str) -> list[Question]:
        path = root / self.key_file("qa", split)
        return [Question(field(entry, "question_id", (int, str), path, index),
                         PurePosixPath(field(entry, "video", str, path, index)).stem,
                         field(entry, "question", str, path, index), field(entry, "answer", str, path, index))
                for index, entry in enumerate(entry_list(load_json(path), path))]

    def answer_list(self, root: Path) -> Optional[list[str]]:
        path = root / "annotations/qa_ans2label.json"
        if not path.is_file():
            return answers_by_frequency(self.questions(root, "train"))
        data = load_json(path, "answer labels")
        if not isinstance(data, dict) or not data:
            raise DataError(f"{path}: expected a JSON object {{answer: label}}")
        return list(data)


class Frozen(MsrvttLayout):
    """Frozen-in-Time's ``MSRVTT.zip``: ``annotation/MSR_VTT.json`` (COCO-style ``{"annotations":
    [{"image_id": "video0", "caption", "id"}]}``), the split lists of ``high-quality/structured-symlinks``
    (one video id a line; ``*_list_full.txt`` the official splits, ``train_list_jsfusion.txt`` and
    ``val_list_jsfusion.txt`` the 1k-A ones, ``jsfusion_val_caption_idx.pkl`` which caption of each
    1k-A test video is its sentence), and ``videos/all/``."""

    name, video_folders = "frozen", ("videos/all",)
    ANNOTATIONS, SPLITS = "annotation/MSR_VTT.json", "high-quality/structured-symlinks"

    def key_file(self, task: Task, split: str) -> Optional[str]:
        return None if task == "qa" else self.ANNOTATIONS

    def sentences(self, root: Path) -> Videos:
        path = root / self.ANNOTATIONS
        sentences: Videos = {}
        for index, entry in enumerate(entry_list(load_json(path), path, "annotations")):
            video_id = field(entry, "image_id", str, path, index, "annotations")
            sentences.setdefault(video_id, []).append(field(entry, "caption", str, path, index, "annotations"))
        return sentences

    def captions(self, root: Path, split: str) -> Videos:
        sentences = self.sentences(root)
        return {v: sentences.get(v, []) for v in load_lines(root / self.SPLITS / f"{split}_list_full.txt")}

    def retrieval(self, root: Path, split: str) -> list[tuple[str, list[str]]]:
        list_file = root / self.SPLITS / ("train_list_jsfusion.txt" if split == "train" else "val_list_jsfusion.txt")
        videos = with_sentences(load_lines(list_file), self.sentences(root), list_file, str(root / self.ANNOTATIONS))
        if split == "train":
            return videos
        index_file = root / self.SPLITS / "jsfusion_val_caption_idx.pkl"
        chosen = load_pickle(index_file)
        if not isinstance(chosen, dict):
            raise DataError(f"{index_file}: expected a mapping {{video_id: caption index}}, got {type(chosen).__name__}")
        test = []
        for video_id, captions in videos:
            index = chosen.get(video_id)
            if index is None or not 0 <= int(index) < len(captions):
                raise DataError(f"{index_file}: no caption index of {video_id} among its {len(captions)} captions "
                                f"(got {index!r})")
            test.append((video_id, [captions[int(index)]]))
        return test


OFFICIAL_INFO = {"train": "train_val_videodatainfo.json", "val": "train_val_videodatainfo.json",
                 "test": "test_videodatainfo.json"}
ANY_RELEASE_VIDEOS = ("video", "TrainValVideo", "TestVideo", "videos/all", "MSRVTT_Videos", "videos")

LAYOUTS: dict[str, MsrvttLayout] = {layout.name: layout for layout in (
    VideoDataInfo("vlreg", {s: f"annotations/{f}" for s, f in OFFICIAL_INFO.items()}, "annotations",
                  "annotations/msrvtt_qa", ("videos/all",)),
    VideoDataInfo("official", OFFICIAL_INFO, "", None, ("TrainValVideo", "TestVideo")),
    VideoDataInfo("clip4clip", dict.fromkeys(OFFICIAL_INFO, "MSRVTT_data.json"), "", None,
                  ("MSRVTT_Videos", "videos/all", "videos")),
    Lavis(),
    Frozen(),
    MsrvttQAFiles("msrvtt_qa", "", ANY_RELEASE_VIDEOS),
)}
