"""The installed package: a wheel built from this checkout, installed into a directory of its own (not
editable), runs the recipes that come inside it from a directory outside the checkout."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.common import ROOT

BUILT_FROM = ("setup.py", "README.md", "MANIFEST.in", "vlreg", "configs", "projects", "benchmarks/suites")
"""What a build reads (copied, so that the build writes nothing into the checkout)."""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The directory the wheel was installed into (``pip install --target``)."""
    root = tmp_path_factory.mktemp("wheel")
    for name in BUILT_FROM:
        source, target = ROOT / name, root / "source" / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "_recipes"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    offline = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []  # else pip fetches it
    subprocess.run([*pip, "wheel", "--no-deps", *offline, str(root / "source"), "-w", str(root / "dist")],
                   check=True, capture_output=True)
    wheel = next((root / "dist").glob("vlreg-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(root / "site"), str(wheel)], check=True,
                   capture_output=True)
    return root / "site"


def vlreg_command(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``vlreg ARGS`` through the installed console script, with the installed package first on the path."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, str(site / "bin" / "vlreg"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_the_installed_package_runs_its_recipes_from_anywhere(site, tmp_path):
    where = vlreg_command(site, tmp_path, "info", "suite", "msrvtt")
    assert where.returncode == 0, where.stderr
    assert f"{site}/vlreg/_recipes/benchmarks/suites/msrvtt.yaml" in where.stdout  # not the checkout's

    listed = vlreg_command(site, tmp_path, "ls")
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith("pformer/video ") and "P-Former for video" in line for line in listed.stdout.splitlines())

    dry = vlreg_command(site, tmp_path, "run", "pformer/video", "--dry-run", "stage2.run.max_steps=5")
    assert dry.returncode == 0, dry.stderr
    assert "stage stage2: task pretrain_stage2" in dry.stdout and "stage qa: task vqa" in dry.stdout

    components = vlreg_command(site, tmp_path, "list")
    assert components.returncode == 0 and "  qformer\n" in components.stdout and "  msrvtt\n" in components.stdout


def test_a_copied_recipe_includes_the_packaged_files_unless_a_local_file_shadows_them(site, tmp_path):
    assert vlreg_command(site, tmp_path, "cp", "blip2/stage1", "mine.yaml").returncode == 0
    shown = vlreg_command(site, tmp_path, "config", "mine.yaml", "--where")
    assert shown.returncode == 0, shown.stderr
    assert "# vlreg:projects/blip2/stages/stage1.yaml:" in shown.stdout  # found inside the package

    (tmp_path / "world" / "stages").mkdir(parents=True)  # a local file of an included name shadows the packaged one
    (tmp_path / "world" / "stages" / "lm.yaml").write_text("name: my_lm\ntask: {name: lm_pretrain}\n")
    shown = vlreg_command(site, tmp_path, "config", "mine.yaml", "--stage", "my_lm")
    assert shown.returncode == 0 and "# stage my_lm\nname: my_lm\n" in shown.stdout, shown.stderr
