"""The synthetic world: official formats, determinism, truthful language, decodable media, learnability."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import vlreg  # noqa: F401  (before decord/webdataset: installs the torchvision guard)
from vlreg.data.world import SIZES, ensure_world, make_world, text_only_baseline
from vlreg.data.world.__main__ import main as world_main
from vlreg.data.world.baseline import AnswerPrior, chance_recall, consensus_caption
from vlreg.data.world.language import annotate, image_questions
from vlreg.data.world.plan import plan_clips, plan_pictures
from vlreg.data.world.scenes import COLORS, Scene, sample_image_scene
from vlreg.data.world.write_attributes import IMAGE_ATTRIBUTES, VIDEO_ATTRIBUTES
from vlreg.errors import ConfigError

SMALL = SIZES["small"]
N_TRAIN, N_VAL, N_TEST = SMALL.images
V_TRAIN, V_VAL, V_TEST = SMALL.videos


GENERATION_SECONDS: list[float] = []


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    start = time.perf_counter()
    root = make_world(tmp_path_factory.mktemp("world") / "small", size="small", seed=0)
    GENERATION_SECONDS.append(time.perf_counter() - start)
    return root


def load(root: Path, rel: str):
    return json.loads((root / rel).read_text(encoding="utf-8"))


def scenes(root: Path, kind: str) -> dict[str, Scene]:
    return {f: Scene.from_dict(s) for f, s in load(root, "attributes/scenes.json")[kind].items()}


def coco_file(image_id: int, folder: str) -> str:
    return f"{folder}/COCO_{folder}_{image_id:012d}.jpg"


# -- generation, reuse, replacement ---------------------------------------------
def test_small_world_is_fast_and_reused(world):
    assert GENERATION_SECONDS[0] < 20, f"the small world took {GENERATION_SECONDS[0]:.1f} s"
    manifest = load(world, "world.json")
    assert (manifest["format"], manifest["version"], manifest["size"], manifest["seed"]) == ("vlreg-world", 2, "small", 0)
    stamp = (world / "world.json").stat().st_mtime_ns
    start = time.perf_counter()
    assert make_world(world, size="small", seed=0) == world
    assert time.perf_counter() - start < 1.0
    assert ensure_world(world, "small", 0) == world
    assert (world / "world.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_partial_world_is_regenerated(world, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(world, copy)
    (copy / "coco" / "annotations" / "coco_karpathy_val.json").unlink()
    missing_video = copy / "msrvtt" / "videos" / "all" / "video3.mp4"
    missing_video.unlink()
    make_world(copy, size="small", seed=0)
    assert (copy / "coco" / "annotations" / "coco_karpathy_val.json").read_bytes() == (
        world / "coco" / "annotations" / "coco_karpathy_val.json").read_bytes()
    assert missing_video.exists()

    manifest = load(copy, "world.json")  # a world written by an older generator is replaced too
    (copy / "world.json").write_text(json.dumps(dict(manifest, version=manifest["version"] - 1)))
    make_world(copy, size="small", seed=0)
    assert load(copy, "world.json") == manifest
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders were left behind"


def test_refuses_to_overwrite_other_things(world, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a vlreg world.*notes.txt"):
        make_world(foreign, size="small")
    assert (foreign / "notes.txt").read_text() == "keep me"

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(world / "world.json", other / "world.json")
    with pytest.raises(ConfigError, match="holds a world with size=small seed=0.*seed=1"):
        make_world(other, size="small", seed=1)
    with pytest.raises(ConfigError, match="unknown world size 'tiny'"):
        make_world(tmp_path / "x", size="tiny")


def test_command_line(world, capsys):
    assert world_main(["--out", str(world), "--size", "small", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert f"small world (seed 0) at {world}" in out and "corpus 2000 sentences" in out
    assert world_main(["--out", str(world), "--size", "small", "--seed", "1"]) == 2
    assert "holds a world with size=small seed=0" in capsys.readouterr().err


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_world(world, tmp_path):
    again = make_world(tmp_path / "again", size="small", seed=0)
    files = sorted(p.relative_to(world) for p in world.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".jpg"]) == N_TRAIN + N_VAL + N_TEST
    different = [f for f in files if (world / f).read_bytes() != (again / f).read_bytes()]
    assert different == []

    other = make_world(tmp_path / "other", size="small", seed=1)
    for rel in ("coco/annotations/coco_karpathy_train.json", "vqav2/v2_mscoco_val2014_annotations.json",
                "msrvtt/annotations/train_val_videodatainfo.json", "text/corpus.txt"):
        assert (world / rel).read_bytes() != (other / rel).read_bytes()


def test_sizes_share_their_items():
    bigger = dataclasses.replace(SMALL, images=(2 * N_TRAIN, 2 * N_VAL, N_TEST), videos=(2 * V_TRAIN, V_VAL, V_TEST))
    small, large = plan_pictures(SMALL, 0), plan_pictures(bigger, 0)
    for split, count in zip(("train", "val", "test"), SMALL.images):
        for a, b in zip(small[split], large[split][:count]):
            assert (a.image_id, a.scene, a.captions, a.questions, a.answers) == (
                b.image_id, b.scene, b.captions, b.questions, b.answers)
    small_clips, large_clips = plan_clips(SMALL, 0), plan_clips(bigger, 0)
    assert [c.scene for c in small_clips["test"]] == [c.scene for c in large_clips["test"]]
    assert large_clips["validate"][0].number == 2 * V_TRAIN  # numbering runs over the splits


# -- formats ----------------------------------------------------------------------
def test_coco_karpathy_format(world):
    ann = "coco/annotations"
    train = load(world, f"{ann}/coco_karpathy_train.json")
    assert len(train) == 5 * N_TRAIN
    assert train[0] == {"image": "train2014/COCO_train2014_000000000009.jpg", "caption": train[0]["caption"],
                        "image_id": "coco_9"}
    for entry in train:
        assert list(entry) == ["image", "caption", "image_id"] and isinstance(entry["caption"], str)
        number = int(entry["image"].rsplit("_", 1)[1][:-4])
        assert entry["image"] == coco_file(number, "train2014") and entry["image_id"] == f"coco_{number}"
        assert (world / "coco" / "images" / entry["image"]).is_file()
    ids = set()
    for split, count in (("val", N_VAL), ("test", N_TEST)):
        entries = load(world, f"{ann}/coco_karpathy_{split}.json")
        gt = load(world, f"{ann}/coco_karpathy_{split}_gt.json")
        assert len(entries) == count and set(gt) == {"info", "images", "annotations", "type"}
        assert gt["type"] == "captions"
        for entry, image in zip(entries, gt["images"]):
            assert list(entry) == ["image", "caption"] and len(entry["caption"]) == 5
            assert list(image) == ["id"] and entry["image"] == coco_file(image["id"], "val2014")
            refs = [a["caption"] for a in gt["annotations"] if a["image_id"] == image["id"]]
            assert refs == entry["caption"]
        for a in gt["annotations"]:
            assert set(a) == {"image_id", "id", "caption"} and isinstance(a["id"], int)
        ids |= {a["id"] for a in gt["annotations"]}
    assert len(ids) == 5 * (N_VAL + N_TEST)  # annotation ids unique over both files
    val, test = (load(world, f"{ann}/coco_karpathy_{split}.json") for split in ("val", "test"))
    assert not {e["image"] for e in val} & {e["image"] for e in test}


def test_vqav2_format(world):
    images = {"train2014": N_TRAIN, "val2014": N_VAL + N_TEST}
    for subtype, count in images.items():
        questions = load(world, f"vqav2/v2_OpenEnded_mscoco_{subtype}_questions.json")
        annotations = load(world, f"vqav2/v2_mscoco_{subtype}_annotations.json")
        assert list(questions) == ["info", "task_type", "data_type", "license", "data_subtype", "questions"]
        assert (questions["task_type"], questions["data_type"], questions["data_subtype"]) == (
            "Open-Ended", "mscoco", subtype)
        assert list(annotations) == ["info", "license", "data_subtype", "annotations"]
        assert len(questions["questions"]) == len(annotations["annotations"]) == 5 * count
        for q, a in zip(questions["questions"], annotations["annotations"]):
            assert list(q) == ["image_id", "question", "question_id"]
            assert q["question_id"] // 1000 == q["image_id"] and q["question_id"] == a["question_id"]
            assert (world / "coco" / "images" / coco_file(q["image_id"], subtype)).is_file()
            assert list(a) == ["question_id", "image_id", "question_type", "answer_type",
                               "multiple_choice_answer", "answers"]
            assert a["answer_type"] in ("yes/no", "number", "other")
            assert q["question"].startswith(a["question_type"] + " ")
            assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
            assert all(set(x) == {"answer", "answer_confidence", "answer_id"} for x in a["answers"])
            assert {x["answer_confidence"] for x in a["answers"]} <= {"yes", "maybe", "no"}
            counts = Counter(x["answer"] for x in a["answers"])
            assert counts[a["multiple_choice_answer"]] == max(counts.values())
    answers = load(world, "vqav2/answer_list.json")
    assert isinstance(answers, list) and len(answers) == len(set(answers))
    assert set(answers) == set(COLORS) | {"circle", "square", "triangle", "star", "cross", "left", "right", "top",
                                          "bottom", "center", "0", "1", "2", "3", "yes", "no"}


def test_msrvtt_format(world):
    ann = world / "msrvtt" / "annotations"
    train_val, test = load(ann, "train_val_videodatainfo.json"), load(ann, "test_videodatainfo.json")
    videos = train_val["videos"] + test["videos"]
    assert [v["id"] for v in videos] == list(range(V_TRAIN + V_VAL + V_TEST))
    assert Counter(v["split"] for v in train_val["videos"]) == {"train": V_TRAIN, "validate": V_VAL}
    assert {v["split"] for v in test["videos"]} == {"test"}
    for v in videos:
        assert set(v) == {"category", "url", "video_id", "start time", "end time", "split", "id"}
        assert v["video_id"] == f"video{v['id']}" and (world / "msrvtt/videos/all" / f"{v['video_id']}.mp4").is_file()
        assert isinstance(v["category"], int) and v["end time"] == 1.0
    sentences = train_val["sentences"] + test["sentences"]
    assert [s["sen_id"] for s in sentences] == list(range(5 * len(videos)))
    assert all(list(s) == ["caption", "video_id", "sen_id"] for s in sentences)

    number = {v["video_id"]: v["id"] for v in videos}
    split_of = {v["id"]: v["split"] for v in videos}
    qa_ids = []
    for name, split in (("train", "train"), ("val", "validate"), ("test", "test")):
        qa = load(ann, f"msrvtt_qa/{name}_qa.json")
        assert qa and all(list(e) == ["question", "answer", "video_id", "id"] for e in qa)
        assert all(isinstance(e["video_id"], int) and split_of[e["video_id"]] == split for e in qa)
        assert all(re.fullmatch(r"[a-z]+", e["answer"]) for e in qa), "MSRVTT-QA answers are single words"
        qa_ids += [e["id"] for e in qa]
    assert qa_ids == list(range(len(qa_ids)))

    with open(ann / "MSRVTT_JSFUSION_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["key", "vid_key", "video_id", "sentence"] and len(rows) == V_TEST
    captions_of = {}
    for s in sentences:
        captions_of.setdefault(s["video_id"], []).append(s["caption"])
    for k, row in enumerate(rows):
        assert row["key"] == f"ret{k}" and row["vid_key"] == f"msr{number[row['video_id']]}"
        assert split_of[number[row["video_id"]]] == "test" and row["sentence"] in captions_of[row["video_id"]]
    with open(ann / "MSRVTT_train.9k.csv", newline="") as f:
        train9k = [r["video_id"] for r in csv.DictReader(f)]
    assert set(train9k) == {v["video_id"] for v in train_val["videos"]}


def test_webdataset_shards(world):
    import webdataset as wds

    manifest = load(world, "world.json")
    urls = [str(world / p) for p in manifest["webdataset_shards"]]
    assert len(urls) == SMALL.shards and manifest["webdataset_urls"] == "webdataset/pairs-{000000..000003}.tar"
    train = load(world, "coco/annotations/coco_karpathy_train.json")
    pairs = Counter((int(e["image_id"][5:]), e["caption"]) for e in train)
    seen = Counter()
    per_shard = Counter()
    for sample in wds.WebDataset(urls, shardshuffle=False).decode("pil"):
        assert set(sample) >= {"__key__", "jpg", "txt", "json"}
        assert sample["json"] == {"caption": sample["txt"], "image_id": int(sample["__key__"].split("_")[0])}
        assert sample["jpg"].size == (SMALL.image_size, SMALL.image_size)
        original = (world / "coco/images" / coco_file(sample["json"]["image_id"], "train2014")).read_bytes()
        assert np.array_equal(np.asarray(sample["jpg"]), np.asarray(_decode(original)))
        seen[(sample["json"]["image_id"], sample["txt"])] += 1
        per_shard[sample["__url__"]] += 1
    assert seen == pairs  # every training pair exactly once
    assert max(per_shard.values()) - min(per_shard.values()) <= 1


def _decode(jpeg: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(jpeg)).convert("RGB")


def test_text_corpus(world):
    lines = (world / "text/corpus.txt").read_text(encoding="utf-8").splitlines()
    jsonl = [json.loads(line) for line in (world / "text/corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == SMALL.corpus and [j["text"] for j in jsonl] == lines and list(jsonl[0]) == ["text"]
    paired = {e["caption"] for e in load(world, "coco/annotations/coco_karpathy_train.json")}
    assert len(lines) >= 5 * len(paired) / 2 and len(set(lines)) > 0.8 * len(lines)
    assert any(" appear" in s for s in lines) and any(" on the left" in s for s in lines)  # clips and pictures


# -- truth: media, captions, answers, attributes -------------------------------------
SHAPE_OF = {"circle": "circle", "disc": "circle", "square": "square", "triangle": "triangle", "star": "star",
            "cross": "cross", "plus sign": "cross"}
SIZE_OF = {"small": "small", "little": "small", "large": "large", "big": "large"}
PLACE_OF = {"left": "left", "left side": "left", "right": "right", "right side": "right", "top": "top",
            "upper part": "top", "bottom": "bottom", "lower part": "bottom", "center": "center", "middle": "center"}
NOUN = re.compile(
    rf"\b(?:(small|little|large|big) )?({'|'.join(COLORS)}) (plus sign|circle|disc|square|triangle|star|cross)"
    rf"(?: (?:on|at|near|in) the (left side|right side|upper part|lower part|left|right|top|bottom|center|middle))?")
COUNT_WORD = {"one": 1, "two": 2, "three": 3}


def _nouns(text: str) -> list[tuple[str, str, str | None, str | None]]:
    """``(colour, shape, size or None, place or None)`` of each noun phrase, in order."""
    return [(c, SHAPE_OF[s], SIZE_OF.get(z), PLACE_OF.get(p)) for z, c, s, p in NOUN.findall(text)]


def test_picture_captions_are_true(world):
    truth = scenes(world, "images")
    entries = load(world, "coco/annotations/coco_karpathy_train.json")
    for split in ("val", "test"):
        entries += [{"image": e["image"], "caption": c}
                    for e in load(world, f"coco/annotations/coco_karpathy_{split}.json") for c in e["caption"]]
    for entry in entries:
        scene, text = truth[entry["image"]], entry["caption"]
        things = {(t.color, t.shape): t for t in scene.things}
        nouns = _nouns(text)
        assert sorted((c, s) for c, s, _, _ in nouns) == sorted(things), text
        for color, shape, size, place in nouns:
            assert size in (None, things[color, shape].size) and place in (None, things[color, shape].position), text
        colors_named = re.findall(rf"\b({'|'.join(COLORS)})\b", text)
        assert len(colors_named) == len(things), text
        counted = re.match(r"(?:there are )?(one|two|three) shapes", text)
        assert counted is None or COUNT_WORD[counted.group(1)] == len(things), text
        for bg in ("black", "dark", "gray", "grey"):
            if f"{bg} background" in text:
                assert bg in {"black": ("black", "dark"), "gray": ("gray", "grey")}[scene.background]


DIRECTION_WORDS = {"left": ("to the left", "leftward", "from right to left"),
                   "right": ("to the right", "rightward", "from left to right"),
                   "up": ("up", "upward", "from the bottom to the top"),
                   "down": ("down", "downward", "from the top to the bottom")}


def test_clip_captions_are_true(world):
    truth = scenes(world, "videos")
    info = [*load(world, "msrvtt/annotations/train_val_videodatainfo.json")["sentences"],
            *load(world, "msrvtt/annotations/test_videodatainfo.json")["sentences"]]
    assert len(info) == 5 * len(truth)
    for sentence in info:
        scene, text = truth[f"{sentence['video_id']}.mp4"], sentence["caption"]
        if scene.event == "moves":
            said = {d for d, ways in DIRECTION_WORDS.items() if any(re.search(rf"\b{w}\b", text) for w in ways)}
            assert said == {scene.direction}, text
            assert sorted((c, s) for c, s, _, _ in _nouns(text)) == sorted((t.color, t.shape) for t in scene.things)
            mover = scene.things[0]
            assert _nouns(text)[0][:2] == (mover.color, mover.shape), text
        elif scene.event == "appears":
            assert [(c, s) for c, s, _, _ in _nouns(text)] == [(t.color, t.shape) for t in scene.things], text
        else:
            changer = scene.things[0]
            before, after = text.find(changer.color), text.find(changer.color_after)
            assert 0 <= before < after, text
            assert any(w in text for w, s in SHAPE_OF.items() if s == changer.shape), text
            named = set(re.findall(rf"\b({'|'.join(COLORS)})\b", text))
            assert named == {c for t in scene.things for c in t.colors()}, text


def _apply(rules: list, question: str) -> str:
    """The answer of the first rule whose pattern matches the whole question."""
    for pattern, rule in rules:
        match = re.fullmatch(pattern, question)
        if match:
            return rule(*match.groups())
    raise AssertionError(f"unexpected question {question!r}")


def _image_answer(scene: Scene, question: str) -> str:
    """Answer a VQA question from the scene, independently of the generator's templates."""
    things = scene.things
    by_shape = {t.shape: t for t in things}
    by_color = {t.color: t for t in things}
    place = {"on the left": "left", "on the right": "right", "at the top": "top", "at the bottom": "bottom",
             "in the center": "center"}
    yes = lambda truth: "yes" if truth else "no"  # noqa: E731
    rules = [
        (r"what color is the (\w+)\?", lambda s: by_shape[s].color),
        (r"which shape is (\w+)\?", lambda c: by_color[c].shape),
        (r"where is the (\w+) (\w+)\?", lambda c, s: by_color[c].position if by_color[c].shape == s else None),
        (r"what shape is (.+)\?", lambda p: next(t.shape for t in things if t.position == place[p])),
        (r"how many shapes are there\?", lambda: str(len(things))),
        (r"how many (small|large) shapes are there\?", lambda z: str(sum(t.size == z for t in things))),
        (r"is there an? (\w+) shape\?", lambda c: yes(c in by_color)),
        (r"is there a (\w+)\?", lambda s: yes(s in by_shape)),
        (r"is there an? (\w+) (\w+)\?", lambda c, s: yes(c in by_color and by_color[c].shape == s)),
        (r"is the (\w+) (small|large)\?", lambda s, z: yes(by_shape[s].size == z)),
        (r"is the (\w+) (\w+)\?", lambda s, c: yes(by_shape[s].color == c)),
    ]
    return _apply(rules, question)


def test_vqa_answers_are_true(world):
    truth = scenes(world, "images")
    noisy = 0
    for subtype in ("train2014", "val2014"):
        questions = load(world, f"vqav2/v2_OpenEnded_mscoco_{subtype}_questions.json")["questions"]
        annotations = load(world, f"vqav2/v2_mscoco_{subtype}_annotations.json")["annotations"]
        for q, a in zip(questions, annotations):
            scene = truth[coco_file(q["image_id"], subtype)]
            assert a["multiple_choice_answer"] == _image_answer(scene, q["question"]), q["question"]
            answers = [x["answer"] for x in a["answers"]]
            assert answers.count(a["multiple_choice_answer"]) >= 6
            noisy += len(set(answers)) > 1
    assert 0.2 < noisy / (5 * (N_TRAIN + N_VAL + N_TEST)) < 0.9  # annotators disagree on some questions


def _clip_answer(scene: Scene, question: str) -> str:
    first, last = scene.things[0], scene.things[-1]
    rest = scene.things[1:]
    words = ("zero", "one", "two", "three")
    rules = [
        (r"which direction does the (\w+) move\?", lambda s: scene.direction if first.shape == s else None),
        (r"what color is the moving shape\?", lambda: first.color),
        (r"what shape is moving\?", lambda: first.shape),
        (r"what color is the shape that (?:stays still|does not change)\?", lambda: rest[0].color),
        (r"what shape appears (first|last)\?", lambda w: (first if w == "first" else last).shape),
        (r"what color is the shape that appears first\?", lambda: first.color),
        (r"how many shapes appear\?", lambda: words[len(scene.things)]),
        (r"what color does the (\w+) turn\?", lambda s: first.color_after if first.shape == s else None),
        (r"what color is the (\w+) at first\?", lambda s: first.color if first.shape == s else None),
        (r"what shape changes color\?", lambda: first.shape),
        (r"what happens to the (\w+)\?", lambda s: scene.event if s in (t.shape for t in scene.things) else None),
    ]
    return _apply(rules, question)


def test_msrvtt_qa_answers_are_true(world):
    truth = scenes(world, "videos")
    for name in ("train", "val", "test"):
        for e in load(world, f"msrvtt/annotations/msrvtt_qa/{name}_qa.json"):
            assert e["answer"] == _clip_answer(truth[f"video{e['video_id']}.mp4"], e["question"]), e


def test_answers_are_balanced():
    """For each question template, no answer dominates; yes/no are even."""
    rng = np.random.default_rng(7)
    by_template: dict[str, Counter] = {}
    for _ in range(3000):
        for q in image_questions(sample_image_scene(rng), rng):
            template = re.sub(rf"\b({'|'.join(COLORS)}|circle|square|triangle|star|cross)\b", "X", q.question)
            template = template.replace(" an X", " a X")
            by_template.setdefault(f"{q.answer_type}: {template}", Counter())[q.answer] += 1
    assert len(by_template) >= 10
    for template, counts in by_template.items():
        share = max(counts.values()) / sum(counts.values())
        if template.startswith("yes/no"):
            assert abs(counts["yes"] / sum(counts.values()) - 0.5) < 0.05, (template, counts)
        else:
            assert len(counts) >= 3 and share < 0.5, (template, counts)


def test_annotators_mostly_agree_with_the_truth():
    rng = np.random.default_rng(0)
    answers = [annotate("2", rng) for _ in range(2000)]
    said = Counter(a for ten in answers for a, _ in ten)
    assert all(len(ten) == 10 and [a for a, _ in ten].count("2") >= 6 for ten in answers)
    assert 0.8 < said["2"] / 20000 < 0.9 and said["two"] > 0 and said["1"] > 0 and said["3"] > 0
    assert set(said) == {"2", "two", "1", "3"}


def test_pictures_show_their_scenes(world):
    from PIL import Image

    side = SMALL.image_size
    for file, scene in scenes(world, "images").items():
        pixels = np.asarray(Image.open(world / "coco/images" / file).convert("RGB"), dtype=int)
        assert pixels.shape == (side, side, 3)
        for t in scene.things:  # the centre of each shape shows its colour
            x, y = int(t.x * side), int(t.y * side)
            assert np.abs(pixels[y, x] - np.array(COLORS[t.color])).max() < 40, (file, t)


def test_videos_decode_and_show_their_events(world):
    import decord

    side, frames = SMALL.image_size, SMALL.num_frames
    for file, scene in scenes(world, "videos").items():
        reader = decord.VideoReader(str(world / "msrvtt/videos/all" / file))
        assert len(reader) == frames
        clip = reader.get_batch(list(range(frames))).asnumpy().astype(int)
        assert clip.shape == (frames, side, side, 3)
        first = scene.things[0]
        if scene.event == "moves":  # the mover's colour travels in its direction
            near = np.abs(clip - np.array(COLORS[first.color])).max(-1) < 40
            ys, xs = np.nonzero(near[0])
            ye, xe = np.nonzero(near[-1])
            dx, dy = (xe.mean() - xs.mean()) / side, (ye.mean() - ys.mean()) / side
            expected = {"left": (-0.6, 0), "right": (0.6, 0), "up": (0, -0.6), "down": (0, 0.6)}[scene.direction]
            assert abs(dx - expected[0]) < 0.1 and abs(dy - expected[1]) < 0.1, (file, dx, dy)
        elif scene.event == "changes":  # the changer's centre shows one colour, then the other
            x, y = int(first.x * side), int(first.y * side)
            assert np.abs(clip[0, y, x] - np.array(COLORS[first.color])).max() < 40
            assert np.abs(clip[-1, y, x] - np.array(COLORS[first.color_after])).max() < 40
        else:  # things appear one after another: the background shrinks, frame 0 is empty
            background = np.abs(clip - clip[0, :1, :1]).max(-1) < 30
            shown = [(~b).sum() for b in background]
            assert shown[0] < 5 and shown[-1] > 0 and all(a <= b + 5 for a, b in zip(shown, shown[1:]))


def _attributes_of(scene: Scene, names: list[str]) -> list[int]:
    true = {f"count={len(scene.things)}"}
    for t in scene.things:
        true |= {f"color={t.color}", f"shape={t.shape}"} | ({f"color={t.color_after}"} if t.color_after else set())
        if scene.event == "still":
            true |= {f"position={t.position}", f"size={t.size}"}
    if scene.event != "still":
        true |= {f"event={scene.event}"} | ({f"direction={scene.direction}"} if scene.direction else set())
    return [int(n in true) for n in names]


def test_attribute_files(world):
    manifest = load(world, "world.json")
    for kind, names, count, root in (("images", IMAGE_ATTRIBUTES, N_TRAIN + N_VAL + N_TEST, "coco/images"),
                                     ("videos", VIDEO_ATTRIBUTES, V_TRAIN + V_VAL + V_TEST, "msrvtt/videos/all")):
        data = load(world, f"attributes/{kind}.json")
        assert data["attributes"] == names == manifest["attributes"][kind] and data["root"] == root
        assert len(data["labels"]) == count and set(data["split"]) == set(data["labels"])
        truth = scenes(world, kind)
        for file, vector in data["labels"].items():
            assert (world / root / file).is_file() and len(vector) == len(names)
            assert vector == _attributes_of(truth[file], names)
            assert sum(v for n, v in zip(names, vector) if n.startswith("count=")) == 1
    assert Counter(load(world, "attributes/videos.json")["split"].values()) == {
        "train": V_TRAIN, "validate": V_VAL, "test": V_TEST}


# -- what a model must beat ---------------------------------------------------------
def test_consensus_caption_and_chance():
    captions_ = ["a red circle", "a red circle on the left", "a blue square", "a red circle and a blue square"]
    assert consensus_caption(captions_) == "a red circle and a blue square"
    chance = chance_recall(20, 5)
    assert chance["img_r1"] == 5.0 and chance["img_r5"] == 25.0 and chance["img_r10"] == 50.0
    assert chance["txt_r1"] == pytest.approx(100 * 5 / 100)
    assert chance["txt_r5"] == pytest.approx(100 * (1 - math.comb(95, 5) / math.comb(100, 5)))
    assert chance_recall(10, 1)["txt_r10"] == pytest.approx(100.0)


def test_text_only_baseline(world):
    scores = text_only_baseline(world)
    vqa = scores["vqav2_val2014"]
    assert vqa["questions"] == 5 * (N_VAL + N_TEST)
    assert 25 < vqa["overall"] < 60 and vqa["per_answer_type"]["other"] < 40
    assert all(15 < scores["msrvtt_qa"][s] < 50 for s in ("val", "test"))
    for part in ("coco_caption", "msrvtt_caption"):
        assert scores[part]["caption"]
        for split in ("val", "test"):
            assert 0 < scores[part][split]["Bleu_4"] < 0.5 and 0 < scores[part][split]["CIDEr"] < 1.0
    assert scores["retrieval_chance"]["coco_test"]["img_r1"] == 100 / N_TEST
    assert scores["retrieval_chance"]["msrvtt_1ka_test"]["img_r5"] == 100 * 5 / V_TEST


def _histogram(path: Path) -> np.ndarray:
    """Log colour histogram, 4 levels per channel: 64 features."""
    from PIL import Image

    levels = np.asarray(Image.open(path).convert("RGB")) // 64
    bins = (levels[..., 0] * 16 + levels[..., 1] * 4 + levels[..., 2]).ravel()
    return np.log(np.bincount(bins, minlength=64) / bins.size + 5e-3)


def test_a_probe_on_pixels_beats_the_text_prior(world):
    """A tiny probe on colour histograms, trained on the training pictures' attribute labels, answers
    val2014 questions about colours and counts far better than the best text-only guess.

    The probe: a linear layer from the 64 histogram features to the attributes (colours, shapes,
    places, sizes) and a linear count head (1, 2 or 3 things) on the detected colours.
    """
    import torch

    from vlreg.metrics import question_accuracy

    data = load(world, "attributes/images.json")
    names = data["attributes"]
    files = {split: [f for f, s in data["split"].items() if s in split] for split in (("train",), ("val", "test"))}
    x = {k: torch.tensor(np.stack([_histogram(world / "coco/images" / f) for f in v]), dtype=torch.float32)
         for k, v in files.items()}
    y = {k: torch.tensor([data["labels"][f] for f in v], dtype=torch.float32) for k, v in files.items()}
    mean, std = x[("train",)].mean(0), x[("train",)].std(0) + 1e-6
    counts = [i for i, n in enumerate(names) if n.startswith("count=")]
    seen = [i for i, n in enumerate(names) if not n.startswith("count=")]
    colors = [i for i, n in enumerate(names) if n.startswith("color=")]
    colors_in_seen = [seen.index(i) for i in colors]
    torch.manual_seed(0)
    attributes, count_head = torch.nn.Linear(64, len(seen)), torch.nn.Linear(len(colors), 3)

    def forward(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = attributes((features - mean) / std)
        return logits, count_head(torch.sigmoid(logits[:, colors_in_seen]).detach())

    optimizer = torch.optim.Adam([*attributes.parameters(), *count_head.parameters()], lr=0.05, weight_decay=1e-3)
    targets = y[("train",)]
    for _ in range(300):
        logits, count_logits = forward(x[("train",)])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[:, seen]) + \
            torch.nn.functional.cross_entropy(count_logits, targets[:, counts].argmax(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.6
    with torch.no_grad():
        logits, count_logits = forward(x[("val", "test")])
    predicted = {f: {**dict(zip([names[i] for i in seen], logits[k].tolist())),
                     **dict(zip([names[i] for i in counts], count_logits[k].tolist()))}
                 for k, f in enumerate(files[("val", "test")])}

    truth = y[("val", "test")][:, colors]
    probe_color_accuracy = ((logits[:, colors_in_seen] > 0).float() == truth).float().mean().item()
    majority_color_accuracy = (truth == 0).float().mean().item()  # always "absent"
    count_accuracy = (count_logits.argmax(1) == y[("val", "test")][:, counts].argmax(1)).float().mean().item()
    assert probe_color_accuracy > 0.95 and majority_color_accuracy < 0.8 and count_accuracy > 0.75

    def probe_answer(file: str, question: str) -> str | None:
        scores = predicted[file]
        if question == "how many shapes are there?":
            return str(max((1, 2, 3), key=lambda n: scores[f"count={n}"]))
        match = re.fullmatch(r"is there an? (\w+) shape\?", question)
        return ("yes" if scores[f"color={match.group(1)}"] > 0 else "no") if match else None

    train_q = {q["question_id"]: q["question"] for q in load(world, "vqav2/v2_OpenEnded_mscoco_train2014_questions.json")["questions"]}
    prior = AnswerPrior((train_q[a["question_id"]], a["question_type"], a["multiple_choice_answer"])
                        for a in load(world, "vqav2/v2_mscoco_train2014_annotations.json")["annotations"])
    questions = load(world, "vqav2/v2_OpenEnded_mscoco_val2014_questions.json")["questions"]
    annotations = load(world, "vqav2/v2_mscoco_val2014_annotations.json")["annotations"]
    probe_scores, prior_scores = [], []
    for q, a in zip(questions, annotations):
        answer = probe_answer(coco_file(q["image_id"], "val2014"), q["question"])
        if answer is None:
            continue
        human = [x["answer"] for x in a["answers"]]
        probe_scores.append(question_accuracy(answer, human))
        prior_scores.append(question_accuracy(prior(q["question"], a["question_type"]), human))
    probe_accuracy, prior_accuracy = 100 * np.mean(probe_scores), 100 * np.mean(prior_scores)
    print(f"probe {probe_accuracy:.1f} vs text prior {prior_accuracy:.1f} on {len(probe_scores)} questions; "
          f"colour attributes {probe_color_accuracy:.3f} vs majority {majority_color_accuracy:.3f}, "
          f"count {count_accuracy:.3f}")
    assert len(probe_scores) >= 20
    assert probe_accuracy > 85, probe_accuracy
    assert prior_accuracy < 60, prior_accuracy
    assert probe_accuracy - prior_accuracy > 30
