import subprocess
import sys

import pytest

import vlreg
from vlreg.errors import DuplicateComponentError, UnknownComponentError
from vlreg.registry import KINDS, Registry, registry


def test_every_kind_has_a_registry():
    assert set(KINDS) >= {"encoder", "bridge", "prompter", "llm", "dataset", "processor", "task", "runner", "metric"}
    for kind in KINDS:
        assert registry(kind).kind == kind


def test_register_get_build_and_wildcards():
    reg = Registry("encoder")

    @reg.register("vit_small")
    class Small:
        """A small one."""

        def __init__(self, width: int = 4):
            self.width = width

    reg.register("vit_tiny", type("Tiny", (), {}))
    reg.register("clip_l", type("Clip", (), {}))
    assert reg.get("vit_small") is Small
    assert reg.build("vit_small", width=7).width == 7
    assert reg.names("vit_*") == ["vit_small", "vit_tiny"]
    assert reg.names() == ["clip_l", "vit_small", "vit_tiny"]
    assert "clip_l" in reg and "nope" not in reg
    assert reg.summary("vit_small") == "A small one."


def test_unknown_name_lists_known_names_and_closest_match():
    reg = Registry("bridge")
    for name in ("qformer", "linear", "mlp"):
        reg.register(name, type(name, (), {}))
    with pytest.raises(UnknownComponentError) as err:
        reg.get("qfromer")
    message = str(err.value)
    assert "unknown bridge 'qfromer'" in message
    assert "did you mean 'qformer'" in message
    assert "linear, mlp, qformer" in message


def test_unknown_kind_is_named():
    with pytest.raises(UnknownComponentError, match="unknown kind 'encoders'.*did you mean 'encoder'"):
        registry("encoders")


def test_registering_twice_names_both_definitions():
    reg = Registry("llm")

    @reg.register("opt")
    class First:
        pass

    with pytest.raises(DuplicateComponentError) as err:

        @reg.register("opt")
        class Second:
            pass

    message = str(err.value)
    assert "llm 'opt' is registered twice" in message
    assert "First" in message and "Second" in message
    assert "test_registry.py" in message


def test_plugin_may_not_shadow_a_builtin():
    reg = Registry("encoder", {"vit_tiny": "vlreg.models.encoders.timm_vit"})
    with pytest.raises(DuplicateComponentError, match="built-in in module vlreg.models.encoders.timm_vit"):
        reg.register("vit_tiny", type("Mine", (), {}))


def test_builtins_register_lazily_and_match_the_manifest():
    """Every module named in vlreg.builtins registers exactly the names listed for it."""
    from vlreg.builtins import BUILTINS

    for kind, names in BUILTINS.items():
        for name, module in names.items():
            obj = registry(kind).get(name)
            assert obj.__module__ == module, (kind, name)
    for kind in KINDS:
        reg = registry(kind)
        loaded = {n for n, e in reg._entries.items() if e.loaded and e.module.startswith("vlreg.")}
        assert loaded <= set(BUILTINS.get(kind, {})), f"{kind}: registered but missing from vlreg.builtins"


def test_import_vlreg_stays_light():
    code = (
        "import sys, vlreg\n"
        "heavy = [m for m in ('torch', 'transformers', 'timm', 'decord', 'pycocoevalcap', 'omegaconf', 'torchvision')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_top_level_register_decorator():
    name = "test_only_metric_for_decorator"

    @vlreg.register("metric", name)
    def my_metric(results):
        return {"n": len(results)}

    try:
        assert vlreg.get("metric", name) is my_metric
        assert name in vlreg.list_components("metric", "test_only_*")["metric"]
    finally:
        del registry("metric")._entries[name]
