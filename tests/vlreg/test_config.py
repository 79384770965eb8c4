import pytest

from vlreg.config import load_config, parse_override, save_config, to_plain
from vlreg.errors import ConfigError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_includes_merge_in_order_and_own_keys_win(tmp_path):
    write(tmp_path / "base" / "a.yaml", "model: {width: 1, depth: 2}\nrun: {lr: 0.1}\n")
    write(tmp_path / "base" / "b.yaml", "includes: [a.yaml]\nmodel: {width: 3}\n")
    main = write(tmp_path / "main.yaml", "includes: [base/b.yaml]\nrun: {lr: 0.5, out: '${model.width}'}\n")
    cfg = to_plain(load_config(main))
    assert cfg == {"model": {"width": 3, "depth": 2}, "run": {"lr": 0.5, "out": 3}}


def test_overrides_and_interpolation(tmp_path):
    main = write(tmp_path / "main.yaml", "run: {lr: 0.1, name: 'x'}\nout: '${run.name}_${run.lr}'\n")
    cfg = to_plain(load_config(main, ["run.lr=0.25", "run.name=y", "model.bridge.name=mlp"]))
    assert cfg["out"] == "y_0.25"
    assert cfg["model"] == {"bridge": {"name": "mlp"}}


def test_include_search_path(tmp_path, monkeypatch):
    write(tmp_path / "lib" / "shared.yaml", "a: 1\n")
    monkeypatch.setenv("VLREG_CONFIG_PATH", str(tmp_path / "lib"))
    main = write(tmp_path / "x" / "main.yaml", "includes: [shared.yaml]\nb: 2\n")
    assert to_plain(load_config(main)) == {"a": 1, "b": 2}


def test_missing_file_and_missing_include_are_named(tmp_path):
    with pytest.raises(ConfigError, match="config file '.*nope.yaml' not found"):
        load_config(tmp_path / "nope.yaml")
    main = write(tmp_path / "main.yaml", "includes: [gone.yaml]\n")
    with pytest.raises(ConfigError, match="'gone.yaml' not found"):
        load_config(main)


def test_include_cycle(tmp_path):
    write(tmp_path / "a.yaml", "includes: [b.yaml]\n")
    write(tmp_path / "b.yaml", "includes: [a.yaml]\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_bad_yaml_names_the_file(tmp_path):
    bad = write(tmp_path / "bad.yaml", "model: {width: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse config .*bad.yaml"):
        load_config(bad)


def test_bad_override_and_bad_interpolation(tmp_path):
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("run.lr")
    main = write(tmp_path / "m.yaml", "a: '${missing.key}'\n")
    with pytest.raises(ConfigError, match="cannot resolve config"):
        to_plain(load_config(main))


def test_save_config_is_resolved(tmp_path):
    main = write(tmp_path / "m.yaml", "a: 2\nb: '${a}'\n")
    out = save_config(load_config(main), tmp_path / "run" / "config.yaml")
    assert to_plain(load_config(out)) == {"a": 2, "b": 2}
    assert "${" not in out.read_text()


def test_nested_includes_place_a_component_file_where_it_goes(tmp_path):
    write(tmp_path / "parts" / "vit.yaml", "name: timm_vit\nimg_size: 64\nframe: {depth: 2}\n")
    write(tmp_path / "parts" / "root.yaml", "world: {root: /w}\n")
    main = write(tmp_path / "main.yaml", (
        "includes: [parts/root.yaml]\n"
        "model:\n"
        "  encoder: {includes: [parts/vit.yaml], img_size: 32, frame: {depth: 3}}\n"
        "  stages: [{includes: [parts/vit.yaml], path: '${world.root}/x'}]\n"))
    cfg = to_plain(load_config(main))
    assert cfg["model"]["encoder"] == {"name": "timm_vit", "img_size": 32, "frame": {"depth": 3}}
    assert cfg["model"]["stages"][0] == {"name": "timm_vit", "img_size": 64, "frame": {"depth": 2}, "path": "/w/x"}


def test_includes_must_be_a_list(tmp_path):
    main = write(tmp_path / "main.yaml", "model: {includes: parts/vit.yaml}\n")
    with pytest.raises(ConfigError, match="includes must be a list"):
        load_config(main)


def two_stages(tmp_path):
    """A project of two stages, the first from an included file."""
    write(tmp_path / "parts" / "first.yaml", "name: first\ntask: x\nrun: {lr: 0.1, max_steps: 5}\n")
    return write(tmp_path / "project.yaml", (
        "name: p\n"
        "stages:\n"
        "  - includes: [parts/first.yaml]\n"
        "  - {name: second, task: x, run: &run {lr: 0.2, max_steps: 5}}\n"))


def test_stage_overrides_set_one_stage_every_stage_or_the_chosen_ones(tmp_path):
    path = two_stages(tmp_path)
    cfg = to_plain(load_config(path, ["second.run.max_steps=50", "all.run.lr=0.5", "stages.first.run.seed=3",
                                      "name=q"]))
    assert [s["run"] for s in cfg["stages"]] == [{"lr": 0.5, "max_steps": 5, "seed": 3}, {"lr": 0.5, "max_steps": 50}]
    assert cfg["name"] == "q"
    chosen = to_plain(load_config(path, ["run.max_steps=7"], stages=["second"]))
    assert [s["run"]["max_steps"] for s in chosen["stages"]] == [5, 7]


def test_all_in_a_config_of_one_stage_is_the_config_itself(tmp_path):
    path = write(tmp_path / "one.yaml", "name: one\ntask: x\nrun: {lr: 0.1}\n")
    assert to_plain(load_config(path, ["all.run.lr=0.3", "run.max_steps=4"]))["run"] == {"lr": 0.3, "max_steps": 4}


@pytest.mark.parametrize("overrides, stages, message", [
    (["secnd.run.lr=1"], (), "override 'secnd.run.lr=1': 'secnd' is neither a stage (did you mean 'second'?) nor a "
                             "key of the project; stages: first, second. Set a stage's key as STAGE.key=value"),
    (["run.lr=1"], (), "'run' is neither a stage nor a key of the project"),
    ([], ["third"], "unknown stage 'third'; stages: first, second"),
    (["stages.third.run.lr=1"], (), "stages is a list; address its items by position (0 to 1) or by name (first, "
                                    "second)"),
])
def test_stage_override_mistakes_name_the_stages(tmp_path, overrides, stages, message):
    with pytest.raises(ConfigError) as caught:
        load_config(two_stages(tmp_path), overrides, stages=stages)
    assert message in str(caught.value)


def test_trace_config_says_where_each_key_was_set(tmp_path):
    from vlreg.config import trace_config

    path = two_stages(tmp_path)
    first, project = tmp_path / "parts" / "first.yaml", tmp_path / "project.yaml"
    cfg, origins = trace_config(path, ["second.run.max_steps=50"])
    assert origins[("name",)] == f"{project}:1"
    assert origins[("stages", 0)] == f"{project}:3"
    assert origins[("stages", 0, "name")] == f"{first}:1"
    assert origins[("stages", 0, "run", "lr")] == f"{first}:3"
    assert origins[("stages", 1, "run", "lr")] == f"{project}:4"
    assert origins[("stages", 1, "run", "max_steps")] == "override second.run.max_steps=50"


def test_trace_config_follows_anchors_merges_and_nested_includes(tmp_path):
    from vlreg.config import trace_config

    write(tmp_path / "bridge.yaml", "name: qformer\nnum_queries: 32\nlayers: [1, 2]\n")
    main = write(tmp_path / "main.yaml", (
        "a: &base {x: 1, y: 2}\n"
        "b:\n"
        "  <<: *base\n"
        "  y: 3\n"
        "bridge: {includes: [bridge.yaml], num_queries: 8}\n"))
    cfg, origins = trace_config(main, ["bridge.layers=[4]"])
    assert to_plain(cfg)["b"] == {"x": 1, "y": 3}
    assert origins[("b", "x")] == f"{main}:1" and origins[("b", "y")] == f"{main}:4"
    assert origins[("bridge", "name")] == f"{tmp_path / 'bridge.yaml'}:1"
    assert origins[("bridge", "num_queries")] == f"{main}:5"
    assert origins[("bridge", "layers")] == origins[("bridge", "layers", 0)] == "override bridge.layers=[4]"
    assert ("bridge", "layers", 1) not in origins


def test_the_project_keys_are_those_a_project_node_has():
    from dataclasses import fields

    from vlreg.config import PROJECT_KEYS
    from vlreg.pipeline import ProjectNode

    assert set(PROJECT_KEYS) == {field.name for field in fields(ProjectNode)}
