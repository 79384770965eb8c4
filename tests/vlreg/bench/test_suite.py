"""Benchmark suites as the command line reads them: the built-in suites follow the papers, and mistakes in a
suite or in the models given are named before any model loads."""

import pytest
import yaml

from vlreg.bench.__main__ import main as bench_main

IMAGE = {"name": "image_eval", "image_size": 32}


def test_unknown_suite_lists_the_known_ones(capsys, tmp_path):
    assert bench_main(["--suite", "cocoo", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown suite 'cocoo' (did you mean 'coco'?). Known suites: coco, msrvtt, vqav2; or all, or the path" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("edit, args, message", [
    (lambda s: s["evaluations"]["vqa"].update(taks={}), [], "evaluations.vqa: unknown key 'taks' for evaluation "
                                                            "(did you mean 'task'?)"),
    (lambda s: s["evaluations"]["vqa"]["dataset"].update(processor=IMAGE), [], "evaluations.vqa.dataset: remove "
                                                                               "'processor'"),
    (lambda s: s["evaluations"]["vqa"].update(media="audio"), [], "media: expected one of 'image', 'video'"),
    (lambda s: s.update(evaluation={}), [], "unknown key 'evaluation' (did you mean 'evaluations'?)"),
    (lambda s: None, ["--set", "evaluations.vqaa.task.k=3"], "--set evaluations.vqaa.task.k=3: no such setting"),
    (lambda s: s["evaluations"]["vqa"]["task"].update(name="vqaa"), [], "unknown task 'vqaa' (did you mean 'vqa'?)"),
])
def test_suite_mistakes_are_named_before_any_model_loads(tmp_path, capsys, edit, args, message):
    suite = {"evaluations": {"vqa": {"media": "image", "task": {"name": "vqa"},
                                     "dataset": {"name": "vqav2", "root": "/data/vqav2", "split": "val2014"}}}}
    edit(suite)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(suite))
    assert bench_main(["--suite", str(path), "--model", str(tmp_path / "absent"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("models, message", [
    (lambda d: ["--model", f"{d}/weights.pth"], "is a weights file (a LAVIS checkpoint?)"),
    (lambda d: ["--model", f"{d}/empty"], "neither a vlreg run, a project output with a finished stage, "
                                          "nor a transformers checkpoint"),
    (lambda d: ["--model", f"{d}/empty", "--model", f"{d}/empty", "--name", "a"],
     "give one --name per --model: 2 models, 1 names"),
])
def test_model_mistakes_are_named(tmp_path, capsys, models, message):
    (tmp_path / "weights.pth").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    assert bench_main(["--suite", "coco", *models(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_builtin_suites_follow_the_papers():
    from vlreg.bench import find_suites

    suites = {f.name: f() for f in find_suites("all")}
    assert list(suites) == ["coco", "msrvtt", "vqav2"]
    tasks = {e.key: e.task for s in suites.values() for e in s.evaluations}
    assert tasks["coco/caption"] == {"name": "caption", "num_beams": 5, "max_new_tokens": 30, "min_new_tokens": 8,
                                     "length_penalty": 1.0}
    assert tasks["vqav2/vqa"] == tasks["msrvtt/qa"] == {
        "name": "vqa", "prompt": "Question: {} Short answer:", "method": "generate", "num_beams": 5,
        "max_new_tokens": 10, "min_new_tokens": 1, "length_penalty": -1.0}
    assert tasks["coco/retrieval"]["k"] == tasks["msrvtt/retrieval"]["k"] == 128
    media = {e.key: e.media for s in suites.values() for e in s.evaluations}
    assert {k for k, m in media.items() if m == "video"} == {"msrvtt/caption", "msrvtt/qa", "msrvtt/retrieval"}
    coco = find_suites("coco")[0](["data.root=/data"])
    assert {e.dataset["root"] for e in coco.evaluations} == {"/data/coco"}
    quick = coco.shortened()
    assert [e.task.get("num_beams") for e in quick.evaluations] == [1, None]  # retrieval takes no num_beams
    assert [e.dataset["max_samples"] for e in quick.evaluations] == [16, 16]
