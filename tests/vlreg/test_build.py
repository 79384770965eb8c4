from dataclasses import dataclass
from typing import Literal, Optional

import pytest

from vlreg.build import build, component, validate
from vlreg.errors import ConfigError, UnknownComponentError
from vlreg.registry import registry


@dataclass
class Weights:
    itc: float = 1.0
    itm: float = 1.0


class Frame:
    """A frame encoder for tests."""

    def __init__(self, width: int, precision: Literal["fp32", "bf16"] = "fp32"):
        self.width, self.precision = width, precision


class Video:
    """A video encoder wrapping a frame encoder."""

    def __init__(self, frame_encoder: component("encoder"), num_frames: int = 8,
                 weights: Weights = Weights(), tags: Optional[list[str]] = None, scale: float = 1.0):
        self.frame_encoder, self.num_frames, self.weights, self.tags, self.scale = (
            frame_encoder, num_frames, weights, tags, scale)


@pytest.fixture(autouse=True)
def components():
    reg = registry("encoder")
    reg.register("t_frame", Frame)
    reg.register("t_video", Video)
    yield
    for name in ("t_frame", "t_video"):
        del reg._entries[name]


def test_nested_nodes_and_dataclasses_are_built():
    enc = build("encoder", {"name": "t_video", "frame_encoder": {"name": "t_frame", "width": 3},
                            "weights": {"itm": 2}, "tags": ["a"], "scale": 2})
    assert isinstance(enc.frame_encoder, Frame) and enc.frame_encoder.width == 3
    assert enc.weights == Weights(itc=1.0, itm=2)
    assert enc.scale == 2 and enc.tags == ["a"]


def test_unknown_key_names_key_component_and_valid_keys():
    with pytest.raises(ConfigError) as err:
        validate("encoder", {"name": "t_video", "frame_encoder": {"name": "t_frame", "widht": 3}}, "model.encoder")
    msg = str(err.value)
    assert "model.encoder.frame_encoder: unknown key 'widht' for encoder 't_frame'" in msg
    assert "did you mean 'width'" in msg
    assert "valid keys: precision, width" in msg


def test_wrong_types_are_errors():
    cases = [
        ({"name": "t_frame", "width": "3"}, "model.enc.width: expected int, got str '3'"),
        ({"name": "t_frame", "width": True}, "expected int, got bool"),
        ({"name": "t_frame", "width": 3, "precision": "fp8"}, "expected one of 'fp32', 'bf16', got 'fp8'"),
        ({"name": "t_video", "frame_encoder": {"name": "t_frame", "width": 1}, "tags": "a"}, "tags: expected a list"),
        ({"name": "t_video", "frame_encoder": {"name": "t_frame", "width": 1}, "weights": {"itx": 1}},
         "unknown key 'itx' for Weights"),
        ({"name": "t_video", "frame_encoder": 5}, "frame_encoder: expected a encoder node"),
    ]
    for node, expected in cases:
        with pytest.raises(ConfigError) as err:
            validate("encoder", node, "model.enc")
        assert expected in str(err.value), (node, str(err.value))


def test_missing_required_and_missing_name():
    with pytest.raises(ConfigError, match="encoder 't_frame' needs 'width'"):
        build("encoder", {"name": "t_frame"}, "model.encoder")
    with pytest.raises(ConfigError, match="needs a 'name'"):
        build("encoder", {"width": 3}, "model.encoder")


def test_unknown_nested_name_lists_known():
    with pytest.raises(UnknownComponentError, match="unknown encoder 't_fram'.*did you mean 't_frame'"):
        validate("encoder", {"name": "t_video", "frame_encoder": {"name": "t_fram"}})


def test_defaults_fill_only_what_the_node_leaves_out():
    enc = build("encoder", {"name": "t_frame"}, defaults={"width": 5, "unrelated": 1})
    assert enc.width == 5
    enc = build("encoder", {"name": "t_frame", "width": 2}, defaults={"width": 5})
    assert enc.width == 2


def test_a_bare_name_is_a_node():
    with pytest.raises(ConfigError, match="frame_encoder: encoder 't_frame' needs 'width'"):
        build("encoder", {"name": "t_video", "frame_encoder": "t_frame"}, "model.encoder")


def test_lists_of_nodes_are_built():
    class Many:
        def __init__(self, parts: list[component("encoder")]):
            self.parts = parts

    registry("encoder").register("t_many", Many)
    try:
        many = build("encoder", {"name": "t_many", "parts": [{"name": "t_frame", "width": 1},
                                                             {"name": "t_frame", "width": 2}]})
        assert [p.width for p in many.parts] == [1, 2] and all(isinstance(p, Frame) for p in many.parts)
        with pytest.raises(ConfigError, match=r"parts\[1\]: unknown key 'w' for encoder 't_frame'"):
            validate("encoder", {"name": "t_many", "parts": [{"name": "t_frame", "width": 1}, {"name": "t_frame", "w": 2}]})
    finally:
        del registry("encoder")._entries["t_many"]
