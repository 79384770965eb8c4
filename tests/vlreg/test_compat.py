"""The torchvision guard: applied on a build mismatch, and only then."""

import subprocess
import sys
import textwrap

import pytest

from vlreg.compat import builds_mismatch, local_tag


def run(code: str, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


@pytest.mark.parametrize("torch_v, tv_v, mismatch", [
    ("2.13.0+cpu", "0.28.0", True),        # CPU torch, PyPI's CUDA torchvision: this machine
    ("2.13.0+cpu", "0.28.0+cpu", False),
    ("2.13.0", "0.28.0", False),           # both PyPI CUDA builds
    ("2.13.0+cu130", "0.28.0+cu130", False),
    ("2.13.0+cu130", "0.28.0+cpu", True),
])
def test_decision_from_local_version_tags(torch_v, tv_v, mismatch):
    assert builds_mismatch(torch_v, tv_v) is mismatch
    assert local_tag("2.13.0+cpu") == "cpu" and local_tag("2.13.0") == ""


@pytest.mark.slow
def test_mismatched_install_gets_schemas_and_timm_imports():
    result = run("""
        import importlib.metadata as md
        import vlreg, vlreg.compat as c
        mismatch = c.builds_mismatch(md.version('torch'), md.version('torchvision'))
        import timm, transformers
        from transformers import OPTForCausalLM
        m = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32, num_classes=0)
        print('mismatch', mismatch, 'defined', c._library is not None)
    """, VLREG_TORCHVISION_SHIM="auto")
    assert result.returncode == 0, result.stderr[-2000:]
    line = result.stdout.strip().splitlines()[-1]
    _, mismatch, _, defined = line.split()
    assert defined == mismatch  # defined exactly when the builds differ


def test_matching_install_is_left_untouched():
    """Pretend the builds match: the guard must not define anything."""
    result = run("""
        import importlib.metadata as md
        real = md.version
        md.version = lambda name: '0.28.0+cpu' if name == 'torchvision' else ('2.13.0+cpu' if name == 'torch' else real(name))
        import vlreg, vlreg.compat as c
        try:
            import torchvision
            outcome = 'imported'
        except RuntimeError as exc:
            outcome = 'failed:' + str(exc)
        print('defined', c._library is not None)
        print(outcome)
    """, VLREG_TORCHVISION_SHIM="auto")
    assert result.returncode == 0, result.stderr[-2000:]
    defined, outcome = result.stdout.strip().splitlines()[-2:]
    assert defined == "defined False"
    # where torchvision's build is really broken, it fails exactly as it would without vlreg
    assert outcome == "imported" or "torchvision::nms does not exist" in outcome


def test_guard_can_be_forced_off():
    result = run("import vlreg, vlreg.compat as c, importlib.util; importlib.util.find_spec('torchvision'); "
                 "print(c._library is None)", VLREG_TORCHVISION_SHIM="0")
    assert result.stdout.strip() == "True"
