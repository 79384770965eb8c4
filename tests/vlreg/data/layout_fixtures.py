"""Tiny datasets in each public layout, all written from one small source, so that every layout of a
family holds the same videos, images, sentences and questions.

Field names and folder trees are those of the real releases (see ``vlreg/data/README.md``); media are
real files: one tiny H.264 clip and one tiny JPEG, copied wherever a layout keeps a video or an image.
"""

from __future__ import annotations

import csv
import json
import pickle
import shutil
from pathlib import Path
from typing import Any, Iterable

# -- MSRVTT -----------------------------------------------------------------------------

SPLITS = {"train": ["video0", "video1", "video2"], "validate": ["video3"], "test": ["video4", "video5", "video6"]}
TRAIN_VAL = SPLITS["train"] + SPLITS["validate"]
ALL_VIDEOS = TRAIN_VAL + SPLITS["test"]
CAPTIONS = {v: [f"a person is doing thing {k} in clip {v[5:]}" for k in range(3)] for v in ALL_VIDEOS}
JSFUSION_TEST = {"video4": 2, "video6": 0}  # the 1k-A test videos and which caption is their sentence
TRAIN_9K = TRAIN_VAL + ["video5"]          # spans both official video folders
QA_SPLITS = {"train": "train", "validate": "val", "test": "test"}
ANSWERS = ["man", "dog", "car", "man"]


def questions(split: str) -> list[dict[str, Any]]:
    """MSRVTT-QA entries of one split (ids running over the three files, as in the release)."""
    start = {"train": 0, "val": 100, "test": 200}[split]
    videos = SPLITS[{v: k for k, v in QA_SPLITS.items()}[split]]
    return [{"answer": ANSWERS[(n + k) % len(ANSWERS)], "id": start + 2 * n + k,
             "question": f"what is in clip {v[5:]} number {k}?", "video_id": int(v[5:])}
            for n, v in enumerate(videos) for k in range(2)]


def jsfusion_pairs() -> list[tuple[str, str]]:
    return [(v, CAPTIONS[v][k]) for v, k in JSFUSION_TEST.items()]


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def tiny_clip(cache: dict = {}) -> bytes:  # noqa: B006 (encoded once per session)
    """A real MP4 (H.264, 16x16, 2 frames)."""
    if "clip" not in cache:
        import tempfile

        import numpy as np

        from vlreg.data.world.write_msrvtt import write_video

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "clip.mp4"
            write_video(path, [np.full((16, 16, 3), 40 * k, np.uint8) for k in range(2)], fps=2)
            cache["clip"] = path.read_bytes()
    return cache["clip"]


def tiny_jpeg(cache: dict = {}) -> bytes:  # noqa: B006
    """A real JPEG, 8x8."""
    if "jpeg" not in cache:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="JPEG")
        cache["jpeg"] = buffer.getvalue()
    return cache["jpeg"]


def write_media(folder: Path, names: Iterable[str], data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(data)


def write_videos(root: Path, folder: str, videos: Iterable[str]) -> None:
    write_media(root / folder, [f"{v}.mp4" for v in videos], tiny_clip())


def video_entry(video_id: str, split: str) -> dict[str, Any]:
    return {"category": 3, "url": f"https://www.youtube.com/watch?v={video_id}", "video_id": video_id,
            "start time": 1.5, "end time": 11.5, "split": split, "id": int(video_id[5:])}


def videodatainfo(videos: list[str], first_sentence: int = 0) -> dict[str, Any]:
    """The official format: ``{"info", "videos", "sentences"}``; sentence ids run on from ``first_sentence``."""
    split_of = {v: s for s, vs in SPLITS.items() for v in vs}
    sentences = [{"caption": c, "video_id": v} for v in videos for c in CAPTIONS[v]]
    for n, sentence in enumerate(sentences):
        sentence["sen_id"] = first_sentence + n
    return {"info": {"contributor": "Microsoft MSM group", "data_created": "2016-04-14 14:30:20",
                     "version": "1.0", "description": "MSR-VTT dataset", "year": "2016"},
            "videos": [video_entry(v, split_of[v]) for v in videos], "sentences": sentences}


def write_videodatainfo(root: Path, folder: str = "") -> None:
    write_json(root / folder / "train_val_videodatainfo.json", videodatainfo(TRAIN_VAL))
    write_json(root / folder / "test_videodatainfo.json", videodatainfo(SPLITS["test"], 3 * len(TRAIN_VAL)))


def write_jsfusion_csvs(root: Path, folder: str = "") -> None:
    """JSFusion's 1k-A lists as CLIP4Clip distributes them."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    with open(root / folder / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        for k, (video, sentence) in enumerate(jsfusion_pairs()):
            writer.writerow([f"ret{k}", f"msr{video[5:]}", video, sentence])
    write_lines(root / folder / "MSRVTT_train.9k.csv", ["video_id", *TRAIN_9K])


def write_msrvtt_qa(root: Path, folder: str = "") -> None:
    for split in QA_SPLITS.values():
        write_json(root / folder / f"{split}_qa.json", questions(split))


def write_msrvtt_vlreg(root: Path) -> Path:
    """vlreg's assembled layout (what the synthetic world writes)."""
    write_videodatainfo(root, "annotations")
    write_jsfusion_csvs(root, "annotations")
    write_msrvtt_qa(root, "annotations/msrvtt_qa")
    write_videos(root, "videos/all", ALL_VIDEOS)
    return root


def write_msrvtt_official(root: Path, extras: bool = True) -> Path:
    """The MSR-VTT release unpacked; with ``extras``, JSFusion's CSV files and MSRVTT-QA's files beside it."""
    write_videodatainfo(root)
    write_videos(root, "TrainValVideo", TRAIN_VAL)
    write_videos(root, "TestVideo", SPLITS["test"])
    if extras:
        write_jsfusion_csvs(root)
        write_msrvtt_qa(root)
    return root


def write_msrvtt_clip4clip(root: Path, extras: bool = True) -> Path:
    """CLIP4Clip's msrvtt_data with its videos in MSRVTT_Videos/; with ``extras``, MSRVTT-QA's files."""
    write_json(root / "MSRVTT_data.json", videodatainfo(ALL_VIDEOS))
    write_jsfusion_csvs(root)
    write_lines(root / "MSRVTT_train.7k.csv", ["video_id", *TRAIN_VAL])
    write_videos(root, "MSRVTT_Videos", ALL_VIDEOS)
    if extras:
        write_msrvtt_qa(root)
    return root


def write_msrvtt_lavis(root: Path) -> Path:
    """LAVIS's msrvtt/: annotations/{cap,qa,retrieval}_<split>.json and videos/."""
    ann = root / "annotations"
    for split, name in QA_SPLITS.items():
        videos = SPLITS[split]
        if name == "train":
            cap = [{"video": f"{v}.mp4", "caption": c, "image_id": v} for v in videos for c in CAPTIONS[v]]
        else:
            cap = [{"video": f"{v}.mp4", "caption": CAPTIONS[v], "image_id": v} for v in videos]
        write_json(ann / f"cap_{name}.json", cap)
        write_json(ann / f"qa_{name}.json", [
            {"video": f"video{q['video_id']}.mp4", "question": q["question"], "answer": q["answer"],
             "question_id": q["id"]} for q in questions(name)])
    answers = {q["answer"] for q in questions("train")}
    write_json(ann / "qa_ans2label.json", {a: n for n, a in enumerate(sorted(answers))})
    write_json(ann / "retrieval_train.json", [{"video": f"{v}.mp4", "caption": c} for v in TRAIN_9K for c in CAPTIONS[v]])
    write_json(ann / "retrieval_test.json", [{"video": f"{v}.mp4", "caption": [s]} for v, s in jsfusion_pairs()])
    write_videos(root, "videos", ALL_VIDEOS)
    return root


def write_msrvtt_frozen(root: Path, extras: bool = True) -> Path:
    """Frozen-in-Time's MSRVTT.zip unpacked; with ``extras``, MSRVTT-QA's files."""
    annotations = [{"caption": c, "id": n, "image_id": v} for n, (v, c) in
                   enumerate((v, c) for v in ALL_VIDEOS for c in CAPTIONS[v])]
    write_json(root / "annotation/MSR_VTT.json", {"info": {}, "images": [{"id": v} for v in ALL_VIDEOS],
                                                   "annotations": annotations, "type": "captions"})
    splits = root / "high-quality/structured-symlinks"
    for split, name in QA_SPLITS.items():
        write_lines(splits / f"{name}_list_full.txt", SPLITS[split])
    write_lines(splits / "train_list_jsfusion.txt", TRAIN_9K)
    write_lines(splits / "val_list_jsfusion.txt", JSFUSION_TEST)
    with open(splits / "jsfusion_val_caption_idx.pkl", "wb") as f:
        pickle.dump(dict(JSFUSION_TEST), f)
    write_videos(root, "videos/all", ALL_VIDEOS)
    if extras:
        write_msrvtt_qa(root)
    return root


def write_msrvtt_qa_release(root: Path) -> Path:
    """MSRVTT-QA as released: the three QA files and video/."""
    write_msrvtt_qa(root)
    write_videos(root, "video", ALL_VIDEOS)
    return root


MSRVTT_LAYOUTS = {"vlreg": write_msrvtt_vlreg, "official": write_msrvtt_official, "clip4clip": write_msrvtt_clip4clip,
                  "lavis": write_msrvtt_lavis, "frozen": write_msrvtt_frozen, "msrvtt_qa": write_msrvtt_qa_release}

# -- VQAv2 ------------------------------------------------------------------------------

VQA_IMAGES = {"train2014": [9, 25], "val2014": [42, 73], "test2015": [1, 8]}


def vqa_questions(split: str) -> list[dict[str, Any]]:
    images = VQA_IMAGES[split.replace("test-dev", "test")]
    return [{"image_id": i, "question": f"What colour is thing {k} in picture {i}?", "question_id": i * 1000 + k}
            for i in images for k in range(2)]


def vqa_answers(question_id: int) -> list[str]:
    """Ten annotators' answers: mostly one answer, some another."""
    main, other = ("red", "blue") if question_id % 2 else ("yes", "no")
    return [main] * 7 + [other] * 3


def vqa_official_files(split: str) -> tuple[dict, dict]:
    info = {"description": "This is v2.0 of the VQA dataset.", "version": "2.0", "year": 2017}
    qs = {"info": info, "task_type": "Open-Ended", "data_type": "mscoco", "license": {}, "data_subtype": split,
          "questions": vqa_questions(split)}
    anns = {"info": info, "license": {}, "data_subtype": split, "annotations": [
        {"question_id": q["question_id"], "image_id": q["image_id"], "question_type": "what color is the",
         "answer_type": "other", "multiple_choice_answer": vqa_answers(q["question_id"])[0],
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": n + 1}
                     for n, a in enumerate(vqa_answers(q["question_id"]))]} for q in qs["questions"]]}
    return qs, anns


def image_name(split: str, image_id: int) -> str:
    return f"{split}/COCO_{split}_{image_id:012d}.jpg"


def write_images(folder: Path, names: Iterable[str]) -> None:
    names = list(names)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
    write_media(folder, names, tiny_jpeg())


def write_vqa_official_files(question_folder: Path, annotation_folder: Path) -> None:
    for split in ("train2014", "val2014"):
        qs, anns = vqa_official_files(split)
        write_json(question_folder / f"v2_OpenEnded_mscoco_{split}_questions.json", qs)
        write_json(annotation_folder / f"v2_mscoco_{split}_annotations.json", anns)
    write_json(question_folder / "v2_OpenEnded_mscoco_test-dev2015_questions.json",
               vqa_official_files("test-dev2015")[0])


def all_vqa_images() -> list[str]:
    return [image_name(split, i) for split, ids in VQA_IMAGES.items() for i in ids]


def vqa_answer_list() -> list[str]:
    return ["yes", "no", "red", "blue", "2"]


def write_vqav2_official(root: Path) -> Path:
    """The official files unzipped into root, COCO's image folders beside them, LAVIS's answer_list.json added."""
    write_vqa_official_files(root, root)
    write_images(root, all_vqa_images())
    write_json(root / "answer_list.json", vqa_answer_list())
    return root


def write_vqav2_api(root: Path) -> Path:
    """The tree the official VQA API expects."""
    write_vqa_official_files(root / "Questions", root / "Annotations")
    write_images(root / "Images/mscoco", all_vqa_images())
    return root


def write_vqav2_lavis(root: Path) -> Path:
    """LAVIS's coco/ directory for VQAv2."""
    ann = root / "annotations"

    def entries(split: str, answers: bool = True) -> list[dict[str, Any]]:
        images = split.replace("test-dev", "test")
        return [{"question_id": q["question_id"], "question": q["question"],
                 **({"answer": vqa_answers(q["question_id"])} if answers else {}),
                 "image": image_name(images, q["image_id"]), "dataset": "vqa"} for q in vqa_questions(split)]

    write_json(ann / "vqa_train.json", entries("train2014"))
    write_json(ann / "vqa_val.json", entries("val2014"))
    write_json(ann / "vqa_val_eval.json", entries("val2014"))
    write_json(ann / "vqa_test.json", entries("test-dev2015", answers=False))
    write_json(ann / "answer_list.json", vqa_answer_list())
    qs, anns = vqa_official_files("val2014")
    write_json(ann / "v2_OpenEnded_mscoco_val2014_questions.json", qs)
    write_json(ann / "v2_mscoco_val2014_annotations.json", anns)
    write_images(root / "images", all_vqa_images())
    return root


VQAV2_LAYOUTS = {"official": write_vqav2_official, "vqa_api": write_vqav2_api, "lavis": write_vqav2_lavis}

# -- COCO -------------------------------------------------------------------------------

COCO_IMAGES = {"train": ("train2014", [9, 25]), "val": ("val2014", [42, 73]), "test": ("val2014", [74, 133])}


def coco_captions(image_id: int) -> list[str]:
    return [f"a picture number {image_id} of something {k}" for k in range(5)]


def karpathy(split: str) -> list[dict[str, Any]]:
    folder, ids = COCO_IMAGES[split]
    if split == "train":
        return [{"caption": c, "image": image_name(folder, i), "image_id": f"coco_{i}"} for i in ids
                for c in coco_captions(i)]
    return [{"image": image_name(folder, i), "caption": coco_captions(i)} for i in ids]


def coco_ground_truth(split: str) -> dict[str, Any]:
    ids = COCO_IMAGES[split][1]
    annotations = [{"image_id": i, "caption": c, "id": n}
                   for n, (i, c) in enumerate((i, c) for i in ids for c in coco_captions(i))]
    return {"images": [{"id": i} for i in ids], "annotations": annotations, "type": "captions", "info": {}}


def write_karpathy(annotation_folder: Path, ground_truth_folder: Path, image_folder: Path) -> None:
    for split in COCO_IMAGES:
        write_json(annotation_folder / f"coco_karpathy_{split}.json", karpathy(split))
        if split != "train":
            write_json(ground_truth_folder / f"coco_karpathy_{split}_gt.json", coco_ground_truth(split))
    write_images(image_folder, [image_name(f, i) for f, ids in COCO_IMAGES.values() for i in ids])


def write_coco_lavis(root: Path) -> Path:
    """LAVIS's coco/ (its ground truth in LAVIS's cache beside it, ../coco_gt/)."""
    write_karpathy(root / "annotations", root.parent / "coco_gt", root / "images")
    return root


def write_coco_blip(root: Path) -> Path:
    """BLIP's annotation/ (with coco_gt/) next to the COCO image folders."""
    write_karpathy(root / "annotation", root / "annotation/coco_gt", root)
    return root


COCO_LAYOUTS = {"lavis": write_coco_lavis, "blip": write_coco_blip}


def fresh(directory: Path) -> Path:
    """An empty directory (created, or emptied)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory
