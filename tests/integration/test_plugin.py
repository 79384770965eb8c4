"""The example plugin package, pip-installed for real and found through its entry point."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.common import ASSETS, ROOT

PLUGIN = ROOT / "examples" / "vlreg-gated-bridge"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """pip-install the example plugin into a directory of its own (no network, no deps)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(PLUGIN)], check=True, capture_output=True, timeout=300)
    assert list(target.glob("vlreg_gated_bridge-*.dist-info/entry_points.txt"))
    return target


def run_with(site: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_installed_plugin_is_listed_and_builds_from_a_config(plugin_site, tmp_path):
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text("bridge: {name: gated_projector, vision_width: 8, llm_width: 16, num_queries: 4}\n")
    result = run_with(plugin_site, f"""
        import torch, vlreg
        from vlreg.config import load_config
        from vlreg.models.base import Features
        assert 'gated_projector' in vlreg.list_components('bridge')['bridge']
        bridge = vlreg.create('bridge', load_config({str(cfg)!r}).bridge)
        prompts = bridge(Features(torch.randn(2, 10, 8)))
        print(type(bridge).__module__, tuple(prompts.embeds.shape))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["vlreg_gated_bridge", "(2,", "4,", "16)"]


def test_installed_plugin_objective_trains_from_a_config(plugin_site, tmp_path):
    """The plugin's objective, named in a config's model.losses beside a built-in one, trains its bridge
    and its own temperature."""
    tokenizer = ASSETS / "objectives_tokenizers" / "opt"
    cfg = tmp_path / "model.yaml"
    cfg.write_text(textwrap.dedent(f"""
        model:
          encoder: {{includes: [encoders/vit_tiny.yaml], img_size: 32}}
          bridge: {{name: gated_projector, num_queries: 4}}
          llm: {{includes: [llms/opt_tiny.yaml], tokenizer: {str(tokenizer)!r}}}
          losses: [{{name: lm}}, {{name: prompt_text_contrastive, weight: 0.5}}]
    """))
    result = run_with(plugin_site, f"""
        import torch, vlreg
        from vlreg.config import load_config
        from vlreg.models.assembly import VisionLanguageModel
        assert 'prompt_text_contrastive' in vlreg.list_components('objective')['objective']
        torch.manual_seed(0)
        model = VisionLanguageModel.from_config(load_config({str(cfg)!r}).model).train()
        out = model({{"image": torch.randn(3, 3, 32, 32), "text_input": ["a red circle", "a blue square", "a star"]}})
        assert torch.allclose(out["loss"], out["lm"] + 0.5 * out["prompt_itc"])
        out["loss"].backward()
        objective = model.objectives[1]
        assert objective.log_temperature.grad is not None and model.bridge.gate.weight.grad is not None
        print(type(objective).__module__, *out)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["vlreg_gated_bridge.prompt_contrastive", "lm", "prompt_itc", "loss"]


def test_plugin_shows_in_cli_listing(plugin_site):
    result = run_with(plugin_site, "from vlreg.cli import main; main(['list', 'bridge', 'gated*'])")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["bridge:", "gated_projector"]


def test_plugin_misspelt_key_is_named(plugin_site):
    result = run_with(plugin_site, """
        import vlreg
        from vlreg.cli import guarded
        @guarded
        def main(argv):
            vlreg.create('bridge', {'name': 'gated_projector', 'vision_width': 8, 'llm_widht': 16})
            return 0
        raise SystemExit(main(None))
    """)
    assert result.returncode == 2
    assert "unknown key 'llm_widht' for bridge 'gated_projector' (did you mean 'llm_width'?)" in result.stderr


def test_local_plugin_module_only_with_allow_local(tmp_path):
    """A config's plugins: imports installed packages only; a module beside it needs allow_local."""
    (tmp_path / "my_metrics.py").write_text(textwrap.dedent("""
        from vlreg import register
        @register("metric", "always_half")
        def always_half(results):
            '''A metric for this test.'''
            return {"half": 0.5}
    """))
    code = """
        from vlreg.errors import UserError
        from vlreg.registry import import_plugin_modules, get
        try:
            import_plugin_modules(['my_metrics'])
        except UserError as exc:
            print("refused:", exc)
        import_plugin_modules(['my_metrics'], allow_local=True)
        print(get('metric', 'always_half')([])['half'])
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    refused, half = out.stdout.strip().splitlines()
    assert "'my_metrics' listed under plugins: is not part of an installed package" in refused, out.stderr
    assert "--allow-local-plugins" in refused and half == "0.5", out.stderr


def test_missing_plugin_module_is_a_user_error():
    from vlreg.errors import UserError
    from vlreg.registry import import_plugin_modules

    with pytest.raises(UserError, match="plugin module 'no_such_plugin_xyz' listed under plugins: is not part of"):
        import_plugin_modules(["no_such_plugin_xyz"])
    with pytest.raises(UserError, match="plugin module 'no_such_plugin_xyz' listed under plugins: cannot be imported"):
        import_plugin_modules(["no_such_plugin_xyz"], allow_local=True)
    import_plugin_modules(["vlreg.metrics.caption"])  # a module of an installed package
