"""Dataset readers on files written by the synthetic world; bad media; malformed annotations; collation."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import vlreg  # noqa: F401  (the torchvision guard, before anything imports it)
from vlreg import create, distributed
from vlreg.config import load_config, to_plain
from vlreg.data.collate import collate
from vlreg.data.media import BadMediaReport, BadSample, batch_size, track_bad_media
from vlreg.data.vqav2 import choose_answer
from vlreg.errors import ConfigError, DataError

from tests.common import ROOT

IMAGE = {"name": "image_eval", "image_size": 16}
VIDEO = {"name": "video_eval", "image_size": 16, "num_frames": 4}
CAPTION = {"name": "caption"}
QUESTION = {"name": "question", "template": "Question: {} Short answer:"}
CONFIGS = ROOT / "configs" / "data"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from vlreg.data.world import make_world

    return Path(make_world(tmp_path_factory.mktemp("world"), size="small", seed=0))


def read(path: Path):
    return json.loads(path.read_text())


def every_item(dataset) -> list:
    return [dataset[i] for i in range(len(dataset))]


def shard_keys(shard: Path) -> list[str]:
    """The sample keys of a shard in tar order."""
    with tarfile.open(shard) as tar:
        return list(dict.fromkeys(m.name.split(".", 1)[0] for m in tar.getmembers()))


# -- COCO --------------------------------------------------------------------------

def test_coco_caption_train_pairs(world):
    entries = read(world / "coco/annotations/coco_karpathy_train.json")
    ds = create("dataset", {"name": "coco_caption", "root": str(world / "coco"), "split": "train",
                           "processor": {"name": "image_train", "image_size": 16, "hflip": False},
                           "text_processor": CAPTION})
    assert len(ds) == len(entries) > 100
    caption = create("processor", CAPTION)
    for i in (0, 17, 299):
        item = ds[i]
        assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
        assert item["text_input"] == caption(entries[i]["caption"])
        assert item["image_id"] == entries[i]["image_id"] and item["image_id"].startswith("coco_")
        assert item["media_path"] == str(world / "coco/images" / entries[i]["image"])
    batch = next(iter(DataLoader(ds, batch_size=8, collate_fn=collate)))
    assert batch["image"].shape == (8, 3, 16, 16) and len(batch["text_input"]) == 8 and batch["_bad"] == []
    assert ds.captions() == [e["caption"] for e in entries]
    assert len(create("dataset", {"name": "coco_caption", "root": str(world / "coco"), "max_samples": 7})) == 7


def test_coco_caption_eval_references_agree_with_the_ground_truth_file(world):
    entries = read(world / "coco/annotations/coco_karpathy_val.json")
    ds = create("dataset", {"name": "coco_caption", "root": str(world / "coco"), "split": "val", "processor": IMAGE})
    assert len(ds) == len(entries) > 5
    item = ds[0]
    assert set(item) == {"image", "image_id", "media_path"} and isinstance(item["image_id"], int)
    assert ds.gt_file == world / "coco/annotations/coco_karpathy_val_gt.json"
    gt = read(ds.gt_file)
    from_gt: dict[int, list[str]] = {}
    for annotation in gt["annotations"]:
        from_gt.setdefault(annotation["image_id"], []).append(annotation["caption"])
    assert ds.references() == from_gt
    assert [r["image_id"] for r in ds.records] == [image["id"] for image in gt["images"]]


def test_coco_retrieval_texts_and_index_maps(world):
    entries = read(world / "coco/annotations/coco_karpathy_test.json")
    ds = create("dataset", {"name": "coco_retrieval", "root": str(world / "coco"), "split": "test",
                           "processor": IMAGE, "text_processor": CAPTION})
    caption = create("processor", CAPTION)
    assert len(ds) == len(entries) and len(ds.texts) == 5 * len(entries)
    assert ds.texts == [caption(c) for e in entries for c in e["caption"]]
    for i, texts in enumerate(ds.media2txt):
        assert texts == list(range(5 * i, 5 * i + 5)) and all(ds.txt2media[j] == i for j in texts)
    item = ds[3]
    assert item["index"] == 3 and item["image"].shape == (3, 16, 16)
    small = create("dataset", {"name": "coco_retrieval", "root": str(world / "coco"), "max_samples": 2})
    assert len(small) == 2 and len(small.texts) == 10 and small.txt2media == [0] * 5 + [1] * 5


# -- VQAv2 -------------------------------------------------------------------------

def test_vqav2_training_answers_and_weights(world):
    questions = read(world / "vqav2/v2_OpenEnded_mscoco_train2014_questions.json")["questions"]
    annotations = {a["question_id"]: a for a in read(world / "vqav2/v2_mscoco_train2014_annotations.json")["annotations"]}
    ds = create("dataset", {"name": "vqav2", "root": str(world / "vqav2"), "split": "train2014",
                           "processor": IMAGE, "text_processor": QUESTION})
    assert len(ds) == len(questions) > 100 and ds.training
    for i in (0, 5, 299):
        item, question = ds[i], questions[i]
        given = [a["answer"] for a in annotations[question["question_id"]]["answers"]]
        counts = Counter(given)
        assert item["answers"] == list(counts) and item["weights"] == [counts[a] / 10 for a in counts]
        assert item["text_output"] in item["answers"]
        assert item["text_input"] == "Question: " + question["question"].lower() + " Short answer:"
        assert item["question_id"] == question["question_id"]
        assert item["media_path"].endswith(f"train2014/COCO_train2014_{question['image_id']:012d}.jpg")
        assert Path(item["media_path"]).is_file() and item["image"].shape == (3, 16, 16)
    common = create("dataset", {"name": "vqav2", "root": str(world / "vqav2"), "answer_choice": "most_common"})
    for i in range(len(common)):
        expected = annotations[questions[i]["question_id"]]["multiple_choice_answer"]
        assert common[i]["text_output"] == expected


def test_answers_are_drawn_by_annotator_frequency():
    torch.manual_seed(0)
    draws = Counter(choose_answer(["red", "orange", "pink"], [0.7, 0.2, 0.1], "frequency") for _ in range(4000))
    assert abs(draws["red"] / 4000 - 0.7) < 0.03 and abs(draws["pink"] / 4000 - 0.1) < 0.02
    assert choose_answer(["a", "b", "c"], [0.3, 0.4, 0.3], "most_common") == "b"
    assert choose_answer(["a", "b"], [0.5, 0.5], "most_common") == "a"  # ties: the first annotator's


def test_vqav2_evaluation_exposes_official_files(world):
    ds = create("dataset", {"name": "vqav2", "root": str(world / "vqav2"), "split": "val2014", "processor": IMAGE,
                           "text_processor": QUESTION})
    assert not ds.training and len(ds) == len(read(ds.question_file)["questions"])
    assert set(ds[0]) == {"image", "text_input", "question_id", "media_path"}
    assert ds.question_file == world / "vqav2/v2_OpenEnded_mscoco_val2014_questions.json"
    assert ds.annotation_file == world / "vqav2/v2_mscoco_val2014_annotations.json"
    assert ds.answer_list == read(world / "vqav2/answer_list.json")


def test_vqav2_test_split_without_annotations(world, tmp_path):
    questions = read(world / "vqav2/v2_OpenEnded_mscoco_val2014_questions.json")
    for split in ("test2015", "test-dev2015"):
        (tmp_path / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(json.dumps(questions))
    ds = create("dataset", {"name": "vqav2", "root": str(tmp_path), "split": "test-dev2015", "image_root": "/images"})
    assert ds.annotation_file is None and len(ds) == len(questions["questions"])
    image_id = questions["questions"][0]["image_id"]
    assert ds[0]["media_path"] == f"/images/test2015/COCO_test2015_{image_id:012d}.jpg"
    with pytest.raises(DataError, match="v2_mscoco_test2015_annotations.json not found"):
        create("dataset", {"name": "vqav2", "root": str(tmp_path), "split": "test2015", "training": True})


# -- MSRVTT ------------------------------------------------------------------------

def test_msrvtt_caption_splits(world):
    info = read(world / "msrvtt/annotations/train_val_videodatainfo.json")
    train_videos = [v["video_id"] for v in info["videos"] if v["split"] == "train"]
    sentences = [s for s in info["sentences"] if s["video_id"] in train_videos]
    root = str(world / "msrvtt")
    train = create("dataset", {"name": "msrvtt_caption", "root": root, "split": "train", "processor": VIDEO,
                              "text_processor": CAPTION})
    assert len(train) == len(sentences) > 50
    item = train[0]
    assert item["video"].shape == (4, 3, 16, 16) and item["video"].dtype == torch.float32
    assert item["image_id"] == sentences[0]["video_id"] and item["media_path"].endswith(f"/{item['image_id']}.mp4")
    assert item["text_input"] == create("processor", CAPTION)(sentences[0]["caption"])

    val = create("dataset", {"name": "msrvtt_caption", "root": root, "split": "val"})
    assert len(val) == sum(v["split"] == "validate" for v in info["videos"]) and set(val[0]) == {"image_id", "media_path"}
    test = create("dataset", {"name": "msrvtt_caption", "root": root, "split": "test", "processor": VIDEO})
    test_info = read(world / "msrvtt/annotations/test_videodatainfo.json")
    expected: dict[str, list[str]] = {}
    for s in test_info["sentences"]:
        expected.setdefault(s["video_id"], []).append(s["caption"])
    assert test.references() == expected and len(test) == len(test_info["videos"])
    assert torch.equal(test[0]["video"], create("processor", VIDEO)(test.records[0]["media_path"]))


def test_msrvtt_with_pre_extracted_features(world, tmp_path):
    import numpy as np

    videos = [v["video_id"] for v in read(world / "msrvtt/annotations/test_videodatainfo.json")["videos"]]
    for k, video in enumerate(videos):  # video k: k % 4 + 2 rows, filled with k
        np.save(tmp_path / f"{video}.npy", np.full((k % 4 + 2, 6), k, np.float32))
    ds = create("dataset", {"name": "msrvtt_caption", "root": str(world / "msrvtt"), "split": "test",
                            "video_root": str(tmp_path), "processor": {"name": "npy_features", "max_tokens": 4}})
    item = ds[1]
    assert item["media_path"] == str(tmp_path / f"{videos[1]}.npy")
    assert item["features"].shape == (4, 6) and item["features"][0, 0] == 1
    assert item["features_mask"].tolist() == [True, True, True, False]  # 3 rows, padded to 4
    batch = collate([ds[i] for i in range(4)])
    assert batch["features"].shape == (4, 4, 6)
    assert batch["features_mask"].sum(1).tolist() == [2, 3, 4, 4]  # 2, 3, 4 rows; 5 truncated to 4


def test_msrvtt_qa(world):
    entries = read(world / "msrvtt/annotations/msrvtt_qa/train_qa.json")
    root = str(world / "msrvtt")
    train = create("dataset", {"name": "msrvtt_qa", "root": root, "split": "train", "processor": VIDEO,
                              "text_processor": QUESTION})
    assert len(train) == len(entries) > 50
    item = train[7]
    assert item["answers"] == [entries[7]["answer"]] and item["weights"] == [1.0]
    assert item["text_output"] == entries[7]["answer"] and item["question_id"] == entries[7]["id"]
    assert item["media_path"].endswith(f"videos/all/video{entries[7]['video_id']}.mp4")
    assert item["video"].shape == (4, 3, 16, 16)

    test = create("dataset", {"name": "msrvtt_qa", "root": root, "split": "test"})
    test_entries = read(world / "msrvtt/annotations/msrvtt_qa/test_qa.json")
    assert set(test[0]) == {"text_input", "question_id", "media_path"}
    assert test.ground_truth() == {e["id"]: e["answer"] for e in test_entries}
    counts = Counter(e["answer"] for e in entries)  # no answer_list.json in the world: training answers
    assert test.answer_list == [a for a, _ in counts.most_common()]


def test_msrvtt_retrieval_1k_a(world):
    ann = world / "msrvtt/annotations"
    with open(ann / "MSRVTT_JSFUSION_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    test = create("dataset", {"name": "msrvtt_retrieval", "root": str(world / "msrvtt"), "split": "test",
                             "processor": VIDEO})
    assert len(test) == len(rows) > 5
    assert test.texts == [r["sentence"] for r in rows]
    assert test.txt2media == list(range(len(rows))) and test.media2txt == [[i] for i in range(len(rows))]
    assert test[2]["media_path"].endswith(f"/{rows[2]['video_id']}.mp4") and test[2]["index"] == 2

    with open(ann / "MSRVTT_train.9k.csv", newline="") as f:
        train_ids = [r["video_id"] for r in csv.DictReader(f)]
    sentences = read(ann / "train_val_videodatainfo.json")["sentences"]
    train = create("dataset", {"name": "msrvtt_retrieval", "root": str(world / "msrvtt"), "split": "train"})
    assert len(train) == sum(s["video_id"] in train_ids for s in sentences) > 50
    assert {r["image_id"] for r in train.records} == set(train_ids)


# -- text corpora ------------------------------------------------------------------

def test_text_corpora(world):
    lines = (world / "text/corpus.txt").read_text().splitlines()
    text = str(world / "text")
    everything = create("dataset", {"name": "text_lines", "root": text})
    assert [item["text_input"] for item in every_item(everything)] == lines
    train = create("dataset", {"name": "text_lines", "root": text, "val_size": 100, "text_processor": CAPTION})
    val = create("dataset", {"name": "text_lines", "root": text, "split": "val", "val_size": 100})
    assert len(train) == len(lines) - 100 and [i["text_input"] for i in every_item(val)] == lines[-100:]
    assert train[0] == {"text_input": create("processor", CAPTION)(lines[0])}
    jsonl = create("dataset", {"name": "text_jsonl", "root": text, "max_samples": 50})
    assert [item["text_input"] for item in every_item(jsonl)] == lines[:50]
    with pytest.raises(ConfigError, match="val_size must lie in"):
        create("dataset", {"name": "text_lines", "root": text, "split": "val"})

    corpus = create("dataset", {"name": "caption_corpus", "dataset": {"name": "coco_caption", "root": str(world / "coco")}})
    captions = [e["caption"] for e in read(world / "coco/annotations/coco_karpathy_train.json")]
    assert [item["text_input"] for item in every_item(corpus)] == captions
    videos = create("dataset", {"name": "caption_corpus", "dataset": {"name": "msrvtt_caption", "root": str(world / "msrvtt")}})
    info = read(world / "msrvtt/annotations/train_val_videodatainfo.json")
    train_videos = {v["video_id"] for v in info["videos"] if v["split"] == "train"}
    assert [i["text_input"] for i in every_item(videos)] == [s["caption"] for s in info["sentences"]
                                                             if s["video_id"] in train_videos]

    shards = create("dataset", {"name": "text_shards", "root": str(world / "webdataset"), "shuffle_buffer": 0})
    assert Counter(item["text_input"] for item in shards) == Counter(captions)


# -- WebDataset --------------------------------------------------------------------

def test_webdataset_pairs_items(world):
    shard = world / "webdataset/pairs-000000.tar"
    ds = create("dataset", {"name": "webdataset_pairs", "root": str(world / "webdataset"), "processor": IMAGE,
                           "shuffle_shards": False, "shuffle_buffer": 0, "text_processor": CAPTION})
    item = next(iter(ds))
    key = shard_keys(shard)[0]
    meta = json.loads(tarfile.open(shard).extractfile(f"{key}.json").read())
    assert item["media_path"] == f"{shard}:{key}.jpg"
    assert item["text_input"] == create("processor", CAPTION)(meta["caption"]) and item["image_id"] == meta["image_id"]
    coco_file = world / f"coco/images/train2014/COCO_train2014_{meta['image_id']:012d}.jpg"
    assert torch.equal(item["image"], create("processor", IMAGE)(str(coco_file)))


def stream_paths(ds, num_workers: int) -> list[str]:
    loader = DataLoader(ds, batch_size=16, collate_fn=collate, num_workers=num_workers)
    return [path for batch in loader for path in batch["media_path"]]


def test_webdataset_split_by_rank_and_worker_is_disjoint_and_complete(world, monkeypatch):
    shards = sorted((world / "webdataset").glob("pairs-*.tar"))
    everything = {f"{s}:{k}.jpg" for s in shards for k in shard_keys(s)}
    assert len(shards) == 4  # the small world's shards: 2 per rank and 1 per worker with 2 ranks x 2 workers
    node = {"name": "webdataset_pairs", "root": str(world / "webdataset"), "processor": IMAGE, "shuffle_buffer": 50}
    for world_size in (2, 3):
        seen = []
        for rank in range(world_size):
            monkeypatch.setattr(distributed, "rank", lambda r=rank: r)
            monkeypatch.setattr(distributed, "world_size", lambda w=world_size: w)
            paths = stream_paths(create("dataset", node), num_workers=2)
            assert len(paths) == len(set(paths))  # the two workers read different shards
            seen.append(set(paths))
        assert set.union(*seen) == everything and sum(map(len, seen)) == len(everything)  # disjoint, complete
        if world_size == 2:
            assert all(len({p.split(":")[0] for p in s}) == 2 for s in seen)  # 4 shards: 2 per rank, 1 per worker


def test_webdataset_max_samples_resampling_epochs_and_val_shards(world, monkeypatch):
    root = str(world / "webdataset")
    shards = sorted((world / "webdataset").glob("pairs-*.tar"))
    in_order = [f"{s}:{k}.jpg" for s in shards for k in shard_keys(s)]
    first = {"name": "webdataset_pairs", "root": root, "processor": IMAGE, "max_samples": 100, "shuffle_buffer": 0}
    assert set(stream_paths(create("dataset", first), 0)) == set(in_order[:100])
    assert set(stream_paths(create("dataset", first), 2)) == set(in_order[:100])  # the same N whatever the workers

    resampled = {"name": "webdataset_pairs", "root": root, "processor": IMAGE, "resampled": True, "seed": 1}
    ds = create("dataset", resampled)
    draws = [item["media_path"] for _, item in zip(range(400), ds)]
    assert len(draws) == 400 and set(draws) <= set(in_order) and len(set(draws)) < 400  # endless, with repeats
    assert [item["media_path"] for _, item in zip(range(30), ds)] == draws[:30]  # seeded
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert [item["media_path"] for _, item in zip(range(30), ds)] != draws[:30]  # another rank, another stream
    monkeypatch.undo()

    text = create("dataset", {"name": "text_shards", "root": root, "shards": "pairs-*.tar", "shuffle_buffer": 0})
    orders = []
    for epoch in range(4):
        text.set_epoch(epoch)
        orders.append([item["text_input"] for item in text])
    assert all(Counter(o) == Counter(orders[0]) for o in orders) and len({tuple(o) for o in orders}) > 1

    val = create("dataset", {"name": "text_shards", "root": root, "split": "val", "val_shards": 1})
    train = create("dataset", {"name": "text_shards", "root": root, "val_shards": 1})
    assert val.shards == [str(shards[-1])] and train.shards == [str(s) for s in shards[:-1]]
    with pytest.raises(DataError, match="no WebDataset shards match"):
        create("dataset", {"name": "text_shards", "root": root, "shards": "nothing-*.tar"})


# -- bad media ---------------------------------------------------------------------

def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_bad_images_are_skipped_counted_and_reported(world, tmp_path, caplog):
    coco = tmp_path / "coco"
    shutil.copytree(world / "coco", coco)
    entries = read(coco / "annotations/coco_karpathy_val.json")
    truncate(coco / "images" / entries[3]["image"])
    (coco / "images" / entries[11]["image"]).unlink()
    node = {"name": "coco_caption", "root": str(coco), "split": "val", "processor": IMAGE, "max_bad_fraction": 0.1,
            "max_samples": 20}
    ds = create("dataset", node)
    assert isinstance(ds[3], BadSample) and "cannot decode" in ds[3].reason
    assert ds[11] == BadSample(str(coco / "images" / entries[11]["image"]), "file not found")

    report = ds.bad_media_report()
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    with caplog.at_level(logging.INFO, logger="vlreg.data"):
        ids = [i for batch in track_bad_media(loader, report) for i in batch["image_id"]]
    assert len(ids) == 18 and report.seen == 0  # counted, then reset by end_epoch
    assert report.epochs == [{"items": 20, "bad": 2, "fraction": 0.1, "files": report.epochs[0]["files"]}]
    line = next(r.message for r in caplog.records if "bad media" in r.message)
    assert "skipped 2 bad media files of 20 items (10.0%)" in line
    assert entries[3]["image"].split("/")[-1] in line and entries[11]["image"].split("/")[-1] in line

    strict = create("dataset", {**node, "max_bad_fraction": 0.05})
    with pytest.raises(DataError) as err:
        for _ in track_bad_media(DataLoader(strict, batch_size=4, collate_fn=collate), strict.bad_media_report()):
            pass
    message = str(err.value)
    assert "2 bad media files among" in message and "exceed max_bad_fraction 0.05" in message
    assert "file not found" in message and "cannot decode" in message


def test_bad_videos_are_skipped(world, tmp_path):
    msrvtt = tmp_path / "msrvtt"
    shutil.copytree(world / "msrvtt", msrvtt)
    videos = [v["video_id"] for v in read(msrvtt / "annotations/test_videodatainfo.json")["videos"]][:10]
    truncate(msrvtt / f"videos/all/{videos[1]}.mp4")
    (msrvtt / f"videos/all/{videos[3]}.mp4").write_bytes(b"")
    ds = create("dataset", {"name": "msrvtt_caption", "root": str(msrvtt), "split": "test", "processor": VIDEO,
                           "max_bad_fraction": 0.2, "max_samples": 10})
    report = ds.bad_media_report()
    batches = list(track_bad_media(DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate), report))
    assert sum(batch_size(b) for b in batches) == len(videos) - 2
    assert all(b["video"].shape[1:] == (4, 3, 16, 16) for b in batches)
    epoch = report.epochs[-1]
    assert epoch["items"] == len(videos) and epoch["bad"] == 2
    assert epoch["files"][0].startswith(f"{msrvtt}/videos/all/{videos[1]}.mp4 (cannot open video: ")
    assert epoch["files"][1] == f"{msrvtt}/videos/all/{videos[3]}.mp4 (empty file)"


def test_bad_jpg_in_a_shard_is_skipped(world, tmp_path):
    source = world / "webdataset/pairs-000000.tar"
    keys = shard_keys(source)
    with tarfile.open(source) as src, tarfile.open(tmp_path / "pairs-000000.tar", "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name == f"{keys[2]}.jpg":
                data = data[: len(data) // 3]
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    ds = create("dataset", {"name": "webdataset_pairs", "root": str(tmp_path), "processor": IMAGE, "shuffle_buffer": 0})
    report = ds.bad_media_report()
    good = sum(batch_size(b) for b in track_bad_media(DataLoader(ds, batch_size=8, collate_fn=collate), report))
    assert good == len(keys) - 1
    items = list(ds)
    assert items[2] == BadSample(f"{tmp_path / 'pairs-000000.tar'}:{keys[2]}.jpg", items[2].reason)
    assert "cannot decode" in items[2].reason


def test_report_thresholds():
    bad = [BadSample(f"f{i}.jpg", "file not found") for i in range(8)]
    known = BadMediaReport("known", 0.05, expected_total=100)
    known.record(10, bad[:5])  # 5 of an epoch of 100: still possible to end at 5%
    with pytest.raises(DataError, match=r"known: 6 bad media files among 16 items seen \(6.0% of 100\) .* e.g. "
                                        r"f0.jpg \(file not found\)"):
        known.record(0, bad[5:6])  # 6 > 5% of 100: the epoch cannot end below the threshold
    exact = BadMediaReport("exact", 0.05, expected_total=60)
    exact.record(50, bad[:3])  # 3 of 60 is exactly 5%, though only 53 were seen (the last batch was dropped)
    exact.end_epoch()
    pictures = BadMediaReport("pictures", 0.05, expected_total=300)  # 3 bad pictures, 5 captions each
    pictures.record(285, [BadSample(f"p{i}.jpg", "truncated") for i in range(3) for _ in range(5)])
    assert pictures.end_epoch().startswith("pictures: skipped 3 bad media files (15 items) of 300 items (5.0%)")
    assert pictures.epochs[-1]["bad"] == 3 and len(pictures.epochs[-1]["files"]) == 3
    stream = BadMediaReport("stream", 0.05, min_seen=100)
    stream.record(10, bad[:3])  # 23% of 13 seen, but too few seen to judge a stream
    stream.record(150, [])
    stream.record(0, bad[3:8])  # 8 of 168 = 4.8%: fine
    with pytest.raises(DataError, match=r"9 bad media files \(10 items\) among 170 items seen \(5.9%\).* and 4 more"):
        stream.record(0, [BadSample("g.jpg", "x")] * 2)  # one file, two items (two captions of one picture)
    clean = BadMediaReport("clean", 0.05)
    clean.record(40, [])
    assert clean.end_epoch() == "clean: 40 items, no bad media files" and clean.seen == 0
    final = BadMediaReport("final", 0.05)
    final.record(10, bad[:1])
    with pytest.raises(DataError, match="1 bad media files among 11 items"):
        final.end_epoch()


# -- malformed annotations -----------------------------------------------------------

def corrupt(world: Path, tmp_path: Path, part: str, relative: str, change) -> Path:
    """A copy of the world's annotation files of one dataset, with one file changed."""
    root = tmp_path / part
    shutil.copytree(world / part, root, ignore=shutil.ignore_patterns("*.jpg", "*.mp4", "*.tar", "images", "videos"))
    path = root / relative
    if path.suffix == ".json":
        data = read(path)
        change(data)
        path.write_text(json.dumps(data))
    else:
        path.write_text(change(path.read_text()))
    return root


MALFORMED = [
    ("coco", "annotations/coco_karpathy_train.json", lambda d: d[17].pop("caption"),
     {"name": "coco_caption", "split": "train"}, "coco_karpathy_train.json entry 17: missing key 'caption'"),
    ("coco", "annotations/coco_karpathy_val.json", lambda d: d[4].update(caption=7),
     {"name": "coco_caption", "split": "val"}, "coco_karpathy_val.json entry 4: 'caption' must be a string or a list"),
    ("coco", "annotations/coco_karpathy_test.json", lambda d: d[2].pop("image"),
     {"name": "coco_retrieval", "split": "test"}, "coco_karpathy_test.json entry 2: missing key 'image'"),
    ("vqav2", "v2_OpenEnded_mscoco_train2014_questions.json", lambda d: d["questions"][5].pop("question_id"),
     {"name": "vqav2"}, "v2_OpenEnded_mscoco_train2014_questions.json questions entry 5: missing key 'question_id'"),
    ("vqav2", "v2_mscoco_train2014_annotations.json", lambda d: d["annotations"][2]["answers"][4].pop("answer"),
     {"name": "vqav2"}, "v2_mscoco_train2014_annotations.json annotations entry 2 answers entry 4: missing key 'answer'"),
    ("vqav2", "v2_mscoco_train2014_annotations.json", lambda d: d.pop("annotations"),
     {"name": "vqav2"}, "v2_mscoco_train2014_annotations.json: missing key 'annotations'"),
    ("msrvtt", "annotations/train_val_videodatainfo.json", lambda d: d["sentences"][3].pop("caption"),
     {"name": "msrvtt_caption"}, "train_val_videodatainfo.json sentences entry 3: missing key 'caption'"),
    ("msrvtt", "annotations/test_videodatainfo.json", lambda d: d["videos"][1].pop("split"),
     {"name": "msrvtt_caption", "split": "test"}, "test_videodatainfo.json videos entry 1: missing key 'split'"),
    ("msrvtt", "annotations/msrvtt_qa/val_qa.json", lambda d: d[9].pop("answer"),
     {"name": "msrvtt_qa", "split": "val"}, "val_qa.json entry 9: missing key 'answer'"),
    ("msrvtt", "annotations/MSRVTT_JSFUSION_test.csv", lambda t: t.replace("sentence", "caption", 1),
     {"name": "msrvtt_retrieval"}, "MSRVTT_JSFUSION_test.csv: missing column 'sentence'"),
    ("text", "corpus.jsonl", lambda t: t.replace('{"text"', '{"txt"', 1),
     {"name": "text_jsonl"}, "corpus.jsonl line 1: missing key 'text'"),
    ("coco", "annotations/coco_karpathy_val.json", lambda d: d.clear(), {"name": "coco_caption", "split": "test"},
     None),  # untouched test split still loads
]


@pytest.mark.parametrize("part, relative, change, node, message", MALFORMED,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MALFORMED)])
def test_malformed_annotations_name_file_and_entry(world, tmp_path, part, relative, change, node, message):
    root = corrupt(world, tmp_path, part, relative, change)
    node = {**node, "root": str(root)}
    if message is None:
        assert len(create("dataset", node)) > 5
        return
    with pytest.raises(DataError) as err:
        create("dataset", node)
    assert message in str(err.value) and str(root) in str(err.value)


def test_missing_and_unparsable_files(world, tmp_path):
    with pytest.raises(DataError, match=r"no known layout .*; looked for lavis \(annotations/coco_karpathy_train.json\)"):
        create("dataset", {"name": "coco_caption", "root": str(tmp_path)})
    root = corrupt(world, tmp_path, "coco", "annotations/coco_karpathy_val.json", lambda d: None)
    (root / "annotations/coco_karpathy_val.json").write_text('[{"image": "a.jpg", "caption": ["x"]},')
    with pytest.raises(DataError, match=r"coco_karpathy_val.json: not valid JSON"):
        create("dataset", {"name": "coco_caption", "root": str(root), "split": "val"})


# -- collate and configs -------------------------------------------------------------

def test_collate_stacks_tensors_keeps_lists_and_sets_bad_aside():
    items = [
        {"video": torch.full((2, 3, 4, 4), float(i)), "features_mask": torch.tensor([True, i > 0]),
         "text_input": f"t{i}", "image_id": i, "answers": ["a"] * (i + 1)}
        for i in range(3)
    ]
    bad = BadSample("v.mp4", "empty file")
    batch = collate([items[0], bad, items[1], items[2]])
    assert batch["video"].shape == (3, 2, 3, 4, 4) and batch["video"][:, 0, 0, 0, 0].tolist() == [0, 1, 2]
    assert batch["features_mask"].tolist() == [[True, False], [True, True], [True, True]]
    assert batch["text_input"] == ["t0", "t1", "t2"] and batch["image_id"] == [0, 1, 2]
    assert batch["answers"] == [["a"], ["a", "a"], ["a", "a", "a"]]
    assert batch["_bad"] == [bad] and batch_size(batch) == 3
    assert collate([bad]) == {"_bad": [bad]} and batch_size(collate([bad])) == 0
    with pytest.raises(ValueError, match="'video' tensors differ in shape"):
        collate([items[0], {**items[1], "video": torch.zeros(3, 3, 4, 4)}])
    with pytest.raises(ValueError, match="item 1 has keys"):
        collate([items[0], {"text_input": "x"}])


def test_dataloader_seeding_makes_augmentation_reproducible(world):
    node = {"name": "coco_caption", "root": str(world / "coco"), "max_samples": 16,
            "processor": {"name": "image_train", "image_size": 16}}
    ds = create("dataset", node)

    def images(seed: int) -> torch.Tensor:
        loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate,
                            generator=torch.Generator().manual_seed(seed))
        return torch.cat([b["image"] for b in loader])

    first = images(0)
    assert torch.equal(images(0), first) and not torch.equal(images(1), first)


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_data_configs_validate_and_world_ones_build(world, config):
    from vlreg.build import validate

    cfg = to_plain(load_config(CONFIGS / config, [f"vars.world={world}"]))
    for split in ("train", "eval"):
        validate("dataset", cfg["data"][split], f"data.{split}")
        if config.startswith("world_"):
            dataset = create("dataset", cfg["data"][split])
            item = next(iter(dataset)) if not hasattr(dataset, "__len__") else dataset[0]
            assert not isinstance(item, BadSample) and ("text_input" in item or "index" in item or "image_id" in item)
