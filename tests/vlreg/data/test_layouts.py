"""Readers on tiny datasets in every public layout (layout_fixtures.py, beside this file): each layout is
recognised from its files, every layout of a family yields the same videos, images, sentences and questions,
errors name what was looked for, and the benchmark suites' data step accepts each layout with one --set."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.vlreg.data import layout_fixtures as fx
import vlreg  # noqa: F401  (the torchvision guard, before anything imports it)
from vlreg import create
from vlreg.errors import ConfigError, DataError

VIDEO = {"name": "video_eval", "image_size": 16, "num_frames": 2}
IMAGE = {"name": "image_eval", "image_size": 16}
CAPTION_LAYOUTS = ["vlreg", "official", "clip4clip", "lavis", "frozen"]


@pytest.fixture(scope="module")
def msrvtt(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("msrvtt")
    return {name: write(base / name) for name, write in fx.MSRVTT_LAYOUTS.items()}


@pytest.fixture(scope="module")
def vqav2(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("vqav2")
    return {name: write(base / name) for name, write in fx.VQAV2_LAYOUTS.items()}


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("coco")
    return {name: write(base / name / "coco") for name, write in fx.COCO_LAYOUTS.items()}


def dataset(name: str, root: Path, **args):
    return create("dataset", {"name": name, "root": str(root), **args})


def pairs(ds) -> list[tuple[str, str]]:
    """(video file name, caption) of training records."""
    return [(Path(r["media_path"]).name, r["text_input"]) for r in ds.records]


def assert_media_exist(ds) -> None:
    assert all(Path(r["media_path"]).is_file() for r in ds.records)


# -- MSRVTT ---------------------------------------------------------------------------------

@pytest.mark.parametrize("reader, layouts", [
    ("msrvtt_caption", {name: name for name in CAPTION_LAYOUTS}),
    ("msrvtt_retrieval", {name: name for name in CAPTION_LAYOUTS}),
    # MSRVTT-QA's files beside a release that has no questions: the QA reader reads them as msrvtt_qa
    ("msrvtt_qa", {"vlreg": "vlreg", "lavis": "lavis", "msrvtt_qa": "msrvtt_qa", "official": "msrvtt_qa",
                   "clip4clip": "msrvtt_qa", "frozen": "msrvtt_qa"}),
])
def test_msrvtt_layouts_are_recognised(msrvtt, reader, layouts):
    for directory, expected in layouts.items():
        for split in (["train", "test"] if reader == "msrvtt_retrieval" else ["train", "val", "test"]):
            ds = dataset(reader, msrvtt[directory], split=split, processor=VIDEO)
            assert ds.layout.name == expected, (directory, split)
            assert len(ds) > 0
            assert_media_exist(ds)


def test_msrvtt_captions_are_the_same_in_every_layout(msrvtt):
    train = [(f"{v}.mp4", c) for v in fx.SPLITS["train"] for c in fx.CAPTIONS[v]]
    for name in CAPTION_LAYOUTS:
        assert pairs(dataset("msrvtt_caption", msrvtt[name], split="train")) == train, name
        for split, official in (("val", "validate"), ("test", "test")):
            ds = dataset("msrvtt_caption", msrvtt[name], split=split)
            assert ds.references() == {v: fx.CAPTIONS[v] for v in fx.SPLITS[official]}, (name, split)
    ds = dataset("msrvtt_caption", msrvtt["official"], split="test", processor=VIDEO)
    assert ds[0]["video"].shape == (2, 3, 16, 16) and Path(ds[0]["media_path"]).parent.name == "TestVideo"


def test_msrvtt_1k_a_is_the_same_in_every_layout(msrvtt):
    expected = [(f"{v}.mp4", [s]) for v, s in fx.jsfusion_pairs()]
    train = sorted((f"{v}.mp4", c) for v in fx.TRAIN_9K for c in fx.CAPTIONS[v])
    for name in CAPTION_LAYOUTS:
        test = dataset("msrvtt_retrieval", msrvtt[name], split="test", processor=VIDEO)
        assert [(Path(r["media_path"]).name, [test.texts[j] for j in test.media2txt[r["index"]]])
                for r in test.records] == expected, name
        assert test[1]["video"].shape == (2, 3, 16, 16)
        nine_k = dataset("msrvtt_retrieval", msrvtt[name], split="train", processor=VIDEO)
        assert sorted(pairs(nine_k)) == train, name
        assert_media_exist(nine_k)
    # the 9k list spans both of the official release's video folders
    folders = {Path(r["media_path"]).parent.name
               for r in dataset("msrvtt_retrieval", msrvtt["official"], split="train").records}
    assert folders == {"TrainValVideo", "TestVideo"}


def test_msrvtt_questions_are_the_same_in_every_layout(msrvtt):
    for split in ("train", "val", "test"):
        expected = {q["id"]: (q["question"], q["answer"], f"video{q['video_id']}.mp4") for q in fx.questions(split)}
        for name in ("vlreg", "lavis", "msrvtt_qa", "official"):
            ds = dataset("msrvtt_qa", msrvtt[name], split=split)
            found = {r["question_id"]: (r["text_input"], ds.ground_truth()[r["question_id"]],
                                        Path(r["media_path"]).name) for r in ds.records}
            assert found == expected, (name, split)
    train = dataset("msrvtt_qa", msrvtt["msrvtt_qa"], processor=VIDEO)
    assert train[0]["text_output"] == fx.questions("train")[0]["answer"] and train[0]["video"].shape[0] == 2
    assert dataset("msrvtt_qa", msrvtt["msrvtt_qa"]).answer_list == ["man", "dog", "car"]  # by frequency
    assert dataset("msrvtt_qa", msrvtt["lavis"]).answer_list == ["car", "dog", "man"]  # qa_ans2label.json


# -- VQAv2 ----------------------------------------------------------------------------------

def test_vqav2_layouts_give_the_same_questions_answers_and_images(vqav2):
    expected = {q["question_id"]: q["question"] for q in fx.vqa_questions("train2014")}
    seen = {}
    for name, root in vqav2.items():
        train = dataset("vqav2", root, split="train2014", processor=IMAGE)
        assert train.layout.name == name and train.training
        assert {r["question_id"]: r["text_input"] for r in train.records} == expected
        seen[name] = [(Path(r["media_path"]).name, r["answers"], r["weights"]) for r in train.records]
        assert_media_exist(train)
        assert train[0]["image"].shape == (3, 16, 16) and train[0]["text_output"] in train[0]["answers"]
        val = dataset("vqav2", root, split="val2014", processor=IMAGE)
        assert [r["question_id"] for r in val.records] == [q["question_id"] for q in fx.vqa_questions("val2014")]
        assert json.loads(val.annotation_file.read_text()) == fx.vqa_official_files("val2014")[1]
        assert json.loads(val.question_file.read_text()) == fx.vqa_official_files("val2014")[0]
        assert_media_exist(val)
        test = dataset("vqav2", root, split="test-dev2015")
        assert test.annotation_file is None and len(test) == 4 and "test2015/COCO_test2015_" in test.records[0]["media_path"]
    assert seen["official"] == seen["vqa_api"] == seen["lavis"]
    assert seen["lavis"][0][1:] == (["red", "blue"], [0.7, 0.3]) or seen["lavis"][0][1:] == (["yes", "no"], [0.7, 0.3])
    assert dataset("vqav2", vqav2["lavis"], split="val2014").answer_list == fx.vqa_answer_list()
    with pytest.raises(DataError, match=r"answer_list.json not found"):
        dataset("vqav2", vqav2["vqa_api"], split="val2014").answer_list


# -- COCO -----------------------------------------------------------------------------------

def test_coco_lavis_and_blip_layouts(coco):
    for name, root in coco.items():
        train = dataset("coco_caption", root, split="train", processor=IMAGE)
        assert train.layout.name == name and len(train) == 10
        assert_media_exist(train)
        assert train[0]["image"].shape == (3, 16, 16) and train[0]["image_id"] == "coco_9"
        test = dataset("coco_caption", root, split="test")
        assert test.references() == {i: fx.coco_captions(i) for i in fx.COCO_IMAGES["test"][1]}
        assert json.loads(test.gt_file.read_text()) == fx.coco_ground_truth("test")
        retrieval = dataset("coco_retrieval", root, split="val", processor=IMAGE)
        assert retrieval.texts == [c for i in fx.COCO_IMAGES["val"][1] for c in fx.coco_captions(i)]
        assert_media_exist(retrieval)
    assert dataset("coco_caption", coco["lavis"], split="val").gt_file.parent.name == "coco_gt"  # LAVIS's cache


# -- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("node, looked_for", [
    ({"name": "msrvtt_caption", "split": "test"},
     ["vlreg (annotations/test_videodatainfo.json)", "official (test_videodatainfo.json)",
      "clip4clip (MSRVTT_data.json)", "lavis (annotations/cap_test.json)", "frozen (annotation/MSR_VTT.json)"]),
    ({"name": "msrvtt_qa", "split": "val"},
     ["vlreg (annotations/msrvtt_qa/val_qa.json)", "lavis (annotations/qa_val.json)", "msrvtt_qa (val_qa.json)"]),
    ({"name": "msrvtt_retrieval", "split": "train"},
     ["official (train_val_videodatainfo.json)", "lavis (annotations/retrieval_train.json)"]),
    ({"name": "vqav2", "split": "val2014"},
     ["official (v2_OpenEnded_mscoco_val2014_questions.json)",
      "vqa_api (Questions/v2_OpenEnded_mscoco_val2014_questions.json)", "lavis (annotations/vqa_val_eval.json)"]),
    ({"name": "coco_retrieval"}, ["lavis (annotations/coco_karpathy_test.json)",
                                  "blip (annotation/coco_karpathy_test.json)"]),
])
def test_no_known_layout_lists_the_layouts_tried(tmp_path, node, looked_for):
    with pytest.raises(DataError) as err:
        create("dataset", {**node, "root": str(tmp_path)})
    message = str(err.value)
    assert "\n" not in message and f"no known layout under {tmp_path}" in message
    for item in looked_for:
        assert item in message


def test_several_layouts_need_layout_key(msrvtt, tmp_path):
    root = tmp_path / "both"
    shutil.copytree(msrvtt["lavis"], root)
    fx.write_videodatainfo(root, "annotations")
    with pytest.raises(ConfigError, match=r"holds the files of several layouts \(vlreg, lavis\); set layout:"):
        dataset("msrvtt_caption", root, split="test")
    assert dataset("msrvtt_caption", root, split="test", layout="lavis").layout.name == "lavis"
    with pytest.raises(ConfigError, match=r"layout 'official' has no files for it; layouts that do: vlreg, lavis"):
        dataset("msrvtt_qa", root, layout="official")
    with pytest.raises(DataError, match=r"layout frozen needs .*annotation/MSR_VTT.json, which is not there"):
        dataset("msrvtt_caption", root, layout="frozen")
    with pytest.raises(ConfigError, match=r"expected one of 'vlreg', .*got 'clip'"):
        dataset("msrvtt_caption", root, layout="clip")


def test_a_layouts_missing_files_are_named(msrvtt, tmp_path):
    official = fx.write_msrvtt_official(tmp_path / "official", extras=False)
    assert dataset("msrvtt_caption", official, split="test").layout.name == "official"
    with pytest.raises(DataError, match=r"annotation file .*official/MSRVTT_JSFUSION_test.csv not found"):
        dataset("msrvtt_retrieval", official)
    clip4clip = tmp_path / "clip4clip"
    shutil.copytree(msrvtt["clip4clip"], clip4clip)
    data = json.loads((clip4clip / "MSRVTT_data.json").read_text())
    data["sentences"] = [s for s in data["sentences"] if s["video_id"] != "video5"]
    (clip4clip / "MSRVTT_data.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"MSRVTT_train.9k.csv: 1 videos have no sentences in .*MSRVTT_data.json, "
                                        r"e.g. video5"):
        dataset("msrvtt_retrieval", clip4clip, split="train")
    frozen = tmp_path / "frozen"
    shutil.copytree(msrvtt["frozen"], frozen)
    (frozen / "high-quality/structured-symlinks/val_list_full.txt").unlink()
    with pytest.raises(DataError, match=r"split file .*val_list_full.txt not found"):
        dataset("msrvtt_caption", frozen, split="val")
    lavis = tmp_path / "lavis"
    shutil.copytree(msrvtt["lavis"], lavis)
    shutil.rmtree(lavis / "videos")
    assert len(dataset("msrvtt_caption", lavis, split="test")) == 3  # annotations alone: text-only uses
    with pytest.raises(DataError, match=r"no media folder found; looked for .*lavis/videos"):
        dataset("msrvtt_caption", lavis, split="test", processor=VIDEO)


class Shell:
    def __reduce__(self):
        return (print, ("this must not run",))


def test_frozen_caption_index_pickle_is_read_as_plain_values_only(msrvtt, tmp_path):
    frozen = tmp_path / "frozen"
    shutil.copytree(msrvtt["frozen"], frozen)
    index_file = frozen / "high-quality/structured-symlinks/jsfusion_val_caption_idx.pkl"
    index_file.write_bytes(pickle.dumps({v: np.int64(k) for v, k in fx.JSFUSION_TEST.items()}))
    assert dataset("msrvtt_retrieval", frozen).texts == [s for _, s in fx.jsfusion_pairs()]
    index_file.write_bytes(pickle.dumps(Shell()))
    with pytest.raises(DataError, match=r"not a readable pickle of plain values .*builtins.print"):
        dataset("msrvtt_retrieval", frozen)


# -- the benchmark suites' data step ----------------------------------------------------------

@pytest.mark.parametrize("suite, key, layouts", [
    ("msrvtt", "msrvtt", CAPTION_LAYOUTS),
    ("vqav2", "vqav2", list(fx.VQAV2_LAYOUTS)),
    ("coco", "coco", list(fx.COCO_LAYOUTS)),
])
def test_suite_data_step_accepts_each_layout(msrvtt, vqav2, coco, suite, key, layouts):
    from vlreg.bench import find_suites

    directories = {"msrvtt": msrvtt, "vqav2": vqav2, "coco": coco}[key]
    for name in layouts:
        loaded = find_suites(suite)[0]([f"data.{key}={directories[name]}"])
        loaded.prepare()  # reads every evaluation's annotations, as `python -m vlreg.bench` does first
