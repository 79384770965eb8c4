"""Shared fixtures: tokenizers trained on a small synthetic corpus, tiny component nodes; transformers'
deprecations reached from vlreg's code fail the test that reaches them."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tests.common import corpus

# The suite checks numbers (parity with transformers, exact resumes), so it runs in fp32 on every CPU:
# `precision: auto` would otherwise mean bf16 on CPUs with native bf16 and fp32 on the others.
# tests/vlreg/test_device.py checks what auto resolves to, with the CPU's capabilities mocked.
os.environ.setdefault("VLREG_CPU_BF16", "0")
# Tiny models run fastest on one thread, and the runs the tests start (in this process or in
# subprocesses) then keep to one: run.threads auto honours OMP_NUM_THREADS.
os.environ.setdefault("OMP_NUM_THREADS", "1")

INTEGRATION = Path(__file__).resolve().parent / "integration"


def deprecated_by_transformers_for_vlreg(category: type) -> bool:
    """Whether the warning being shown is a deprecation (``DeprecationWarning``, ``FutureWarning``) that
    transformers issues in a call that vlreg's own code made: the frame that issued it is in transformers,
    and a frame further out is in vlreg. (Where a warning is *attributed* does not tell: transformers
    attributes some to its own wrappers.)"""
    if not issubclass(category, (DeprecationWarning, FutureWarning)):
        return False
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") in (__name__, "warnings", "_py_warnings"):
        frame = frame.f_back
    if frame is None or not frame.f_globals.get("__name__", "").startswith("transformers"):
        return False
    while frame is not None:
        if frame.f_globals.get("__name__", "").split(".")[0] == "vlreg":
            return True
        frame = frame.f_back
    return False


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds, or is in the integration tier "
                                       "(tests/integration/); the fast tier is -m 'not slow'")


@pytest.hookimpl(tryfirst=True)  # before -m selects by the marks
def pytest_collection_modifyitems(config, items):
    """Every test under tests/integration/ is slow: recipes, torchrun, pip installs and end-to-end runs on the
    synthetic world. Elsewhere a test over a few seconds carries ``@pytest.mark.slow`` itself."""
    for item in items:
        if INTEGRATION in item.path.resolve().parents:
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Runs each test (setup, call, teardown) with transformers' deprecations raised as errors where vlreg's
    code reaches them (see :func:`deprecated_by_transformers_for_vlreg`); other warnings are shown as before.

    It runs inside pytest's own warning capture, whose ``showwarning`` records the rest.
    """
    show = warnings.showwarning

    def check(message, category, filename, lineno, file=None, line=None):
        if deprecated_by_transformers_for_vlreg(category):
            raise category(f"{message} (a transformers deprecation reached from vlreg's code: use the current API)")
        show(message, category, filename, lineno, file, line)

    warnings.showwarning = check
    try:
        return (yield)
    finally:
        warnings.showwarning = show


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and far faster than on two when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory):
    """``{"bert": dir, "opt": dir, "t5": dir}``: tokenizers trained on :func:`corpus`."""
    from vlreg.models.tokenizers import save_tokenizer, train_tokenizer

    root = tmp_path_factory.mktemp("tokenizers")
    lines = corpus()
    return {style: str(save_tokenizer(train_tokenizer(lines, style, 400), root / style))
            for style in ("bert", "opt", "t5")}


@pytest.fixture(scope="session")
def tiny_nodes(tokenizer_dirs):
    """Component nodes of a tiny BLIP-2: image and video encoders, Q-Former, OPT and T5."""
    from vlreg.config import load_config, to_plain

    def node(path, **overrides):
        return {**to_plain(load_config(path)), **overrides}

    vit = node("encoders/vit_tiny.yaml", img_size=32)
    return {
        "image": vit,
        "video": {"name": "video", "num_frames": 2, "frame_encoder": vit},
        "qformer": {"name": "qformer", "num_queries": 8, "num_layers": 2, "hidden_size": 64, "num_heads": 4,
                    "intermediate_size": 128, "cross_attention_every": 1, "tokenizer": tokenizer_dirs["bert"],
                    "max_text_length": 16, "embed_dim": 32, "max_position_embeddings": 32, "dropout": 0.0},
        "opt": node("llms/opt_tiny.yaml", tokenizer=tokenizer_dirs["opt"]),
        "t5": node("llms/t5_tiny.yaml", tokenizer=tokenizer_dirs["t5"]),
    }


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """The small synthetic world (a few seconds to generate); tests must not modify it."""
    from vlreg.data.world import make_world

    return make_world(tmp_path_factory.mktemp("world") / "small", size="small", seed=0)
