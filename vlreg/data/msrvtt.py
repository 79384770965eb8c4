"""MSRVTT captioning, question answering (MSRVTT-QA) and retrieval (the 1k-A protocol).

Each reader recognises the layout of ``root`` from the files there, separately for its
task and split (:mod:`vlreg.data.msrvtt_layouts`; the trees are drawn in
``vlreg/data/README.md``), or reads the one named by ``layout:``:

- ``vlreg``: the layout vlreg documented first and the synthetic world writes, assembled from
  four distributions (``annotations/`` with the official videodatainfo files, JSFusion's
  CSV files and ``msrvtt_qa/``; ``videos/all/``);
- ``official``: the MSR-VTT release unpacked (``train_val_videodatainfo.json``,
  ``test_videodatainfo.json``, ``TrainValVideo/``, ``TestVideo/``); for retrieval, JSFusion's
  CSV files beside them;
- ``clip4clip``: CLIP4Clip's ``msrvtt_data`` (``MSRVTT_data.json``, ``MSRVTT_train.9k.csv``,
  ``MSRVTT_JSFUSION_test.csv``) with a videos folder;
- ``lavis``: LAVIS's ``annotations/{cap,qa,retrieval}_<split>.json`` and ``videos/``;
- ``frozen``: Frozen-in-Time's ``MSRVTT.zip`` (``annotation/MSR_VTT.json``, the split lists of
  ``high-quality/structured-symlinks/``, ``videos/all/``);
- ``msrvtt_qa``: MSRVTT-QA's ``{train,val,test}_qa.json``, with videos in ``video/`` or in
  the folders of another layout beside them.

Because each reader detects its own layout, files of several layouts may share ``root``
(e.g. the official release with MSRVTT-QA's files and JSFusion's CSV files: captioning,
QA and retrieval from one directory). With the ``npy_features`` processor, set
``video_root`` to the folder of ``video<N>.npy`` files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from ..build import component
from ..errors import DataError
from ..registry import register
from .base import RecordDataset, RetrievalItems
from .layouts import choose_layout
from .msrvtt_layouts import LAYOUTS, LayoutName, Question, Task, Videos
from .vqav2 import AnswerChoice, AnswerTargets


class MsrvttFiles(RecordDataset):
    """Shared by the MSRVTT readers: the layout of ``root`` for a task and split, and the video files."""

    def __init__(self, root: str, split: str, task: Task, layout: Optional[str], processor: Optional[Any],
                 text_processor: Optional[Any], video_root: Optional[str], max_samples: Optional[int],
                 max_bad_fraction: float):
        super().__init__(split, processor, text_processor, max_samples, max_bad_fraction)
        self.root = Path(root)
        reader = f"msrvtt_{task} {split}"
        key_files = {name: key for name, l in LAYOUTS.items() if (key := l.key_file(task, split)) is not None}
        self.layout = LAYOUTS[choose_layout(self.root, key_files, layout, reader)]
        self.ann_file = self.root / key_files[self.layout.name]
        self.videos = self.media_folders(self.root, self.layout.video_folders, video_root, reader)

    def video_file(self, video_id: str) -> str:
        return self.find_media(self.videos, f"{video_id}.mp4")

    def pair_records(self, videos: Videos) -> list[dict[str, Any]]:
        """One training record per (video, caption), videos in the given order."""
        return self.keep([
            {"media_path": self.video_file(video_id), "text_input": caption, "image_id": video_id}
            for video_id, captions in videos.items() for caption in captions
        ])


@register("dataset", "msrvtt_caption")
class MsrvttCaption(MsrvttFiles):
    """MSRVTT video captioning: video-caption pairs for training, videos with references for evaluation.

    Items. train (one per caption): ``{"video" [T,3,H,W], "text_input": caption,
    "image_id": "video<N>", "media_path"}``. val/test (one per video): ``{"video",
    "image_id": "video<N>", "media_path"}``, with ``references() -> {"video<N>": [captions]}``.

    Args:
        root: the MSRVTT directory, in any layout with captions (all but msrvtt_qa).
        split: "train", "val" (MSRVTT's "validate") or "test".
        processor: video processor (or npy_features); None for no media.
        text_processor: applied to training captions (e.g. caption).
        layout: vlreg, official, clip4clip, lavis or frozen (default: recognised from the files).
        video_root: one video directory instead of the layout's, relative to root or absolute.
        max_samples: keep the first N records (captions for train, videos for val/test).
        max_bad_fraction: the largest share of bad video files tolerated per epoch.
    """

    def __init__(self, root: str, split: Literal["train", "val", "test"] = "train",
                 processor: Optional[component("processor")] = None,
                 text_processor: Optional[component("processor")] = None, layout: Optional[LayoutName] = None,
                 video_root: Optional[str] = None, max_samples: Optional[int] = None, max_bad_fraction: float = 0.05):
        super().__init__(root, split, "caption", layout, processor, text_processor, video_root, max_samples,
                         max_bad_fraction)
        videos = self.layout.captions(self.root, split)
        if not videos:
            raise DataError(f"{self.ann_file}: no {split} videos (layout {self.layout.name})")
        self.training = split == "train"
        if self.training:
            self.records = self.pair_records(videos)
        else:
            kept = self.keep(list(videos))
            missing = [v for v in kept if not videos[v]]
            if missing:
                raise DataError(f"{self.ann_file}: no sentences for {len(missing)} {split} videos, e.g. {missing[0]}")
            self.records = [{"media_path": self.video_file(v), "image_id": v} for v in kept]
        self._sentences = videos

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
    exposes ``ground_truth() -> {question_id: answer}`` and ``answer_list`` (the layout's
    list when it ships one: vlreg's ``answer_list.json``, LAVIS's ``qa_ans2label.json``;
    else the training answers, most frequent first).

    Args:
        root: the MSRVTT directory, in the vlreg, lavis or msrvtt_qa layout.
        split: "train", "val" or "test".
        processor: video processor (or npy_features); None for no media.
        text_processor: applied to questions (e.g. question).
        training: training items (default: for split "train").
        layout: vlreg, lavis or msrvtt_qa (default: recognised from the files).
        video_root: one video directory instead of the layout's, relative to root or absolute.
        max_samples: keep the first N questions.
        max_bad_fraction: the largest share of bad video files tolerated per epoch.
    """

    def __init__(self, root: str, split: Literal["train", "val", "test"] = "train",
                 processor: Optional[component("processor")] = None,
                 text_processor: Optional[component("processor")] = None, training: Optional[bool] = None,
                 layout: Optional[LayoutName] = None, video_root: Optional[str] = None,
                 max_samples: Optional[int] = None, max_bad_fraction: float = 0.05):
        super().__init__(root, split, "qa", layout, processor, text_processor, video_root, max_samples,
                         max_bad_fraction)
        self.training = split == "train" if training is None else training
        self.answer_choice: AnswerChoice = "most_common"
        questions: list[Question] = self.keep(self.layout.questions(self.root, split))
        self._answers = {q.question_id: q.answer for q in questions}
        self._answer_list: Optional[list[str]] = None
        for q in questions:
            record = {"media_path": self.video_file(q.video_id), "text_input": q.question, "question_id": q.question_id}
            if self.training:
                record.update(answers=[q.answer], weights=[1.0])
            self.records.append(record)

    def ground_truth(self) -> dict[int | str, str]:
        """``{question_id: answer}`` of the kept questions."""
        return dict(self._answers)

    @property
    def answer_list(self) -> list[str]:
        """Candidate answers for rank-based inference."""
        if self._answer_list is None:
            self._answer_list = self.layout.answer_list(self.root)
        return self._answer_list


@register("dataset", "msrvtt_retrieval")
class MsrvttRetrieval(RetrievalItems, MsrvttFiles):
    """MSRVTT text-video retrieval, 1k-A protocol: 9k training videos, 1k test videos with one sentence each.

    Items. test: ``{"video" [T,3,H,W], "index": i, "media_path"}`` per test video, with
    ``texts`` (the JSFusion sentences), ``txt2media`` and ``media2txt``.
    train: video-caption pairs of the training videos like msrvtt_caption's training items,
    their captions from the layout's sentence file (videodatainfo, ``MSRVTT_data.json``,
    ``MSR_VTT.json``, or LAVIS's ``retrieval_train.json``).

    Args:
        root: the MSRVTT directory, in any layout but msrvtt_qa (official: with JSFusion's CSV files).
        split: "test" or "train".
        processor: video processor (or npy_features); None for no media.
        text_processor: applied to the sentences (e.g. caption).
        layout: vlreg, official, clip4clip, lavis or frozen (default: recognised from the files).
        video_root: one video directory instead of the layout's, relative to root or absolute.
        max_samples: keep the first N videos (test) or pairs (train).
        max_bad_fraction: the largest share of bad video files tolerated per epoch.
    """

    def __init__(self, root: str, split: Literal["train", "test"] = "test",
                 processor: Optional[component("processor")] = None,
                 text_processor: Optional[component("processor")] = None, layout: Optional[LayoutName] = None,
                 video_root: Optional[str] = None, max_samples: Optional[int] = None, max_bad_fraction: float = 0.05):
        super().__init__(root, split, "retrieval", layout, processor, text_processor, video_root, max_samples,
                         max_bad_fraction)
        videos = self.layout.retrieval(self.root, split)
        if split == "test":
            self.index_media([(self.video_file(v), sentences) for v, sentences in self.keep(videos)])
        else:
            self.records = self.pair_records(dict(videos))
