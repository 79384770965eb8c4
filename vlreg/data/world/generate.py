"""Writing a whole world, once: :func:`make_world` and, for configs and multi-process runs, :func:`ensure_world`.

A world is complete when its manifest ``world.json`` exists, names this format
version and the same settings, and every file it lists is there. A world is
generated into a hidden sibling folder and renamed into place at the end, so a
crash never leaves a folder that looks complete; an interrupted or outdated
world is replaced. A folder holding anything that is not a world is left alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from ...errors import ConfigError, DataError
from . import write_attributes, write_coco, write_msrvtt, write_text, write_vqav2, write_webdataset
from .plan import SIZES, WorldSize, plan_clips, plan_corpus, plan_pictures
from .writing import write_json

log = logging.getLogger(__name__)

FORMAT, VERSION = "vlreg-world", 2
MANIFEST = "world.json"
TOP_LEVEL = {"coco", "vqav2", "msrvtt", "webdataset", "text", "attributes", MANIFEST}


def size_preset(size: str, image_size: int | None = None, num_frames: int | None = None) -> WorldSize:
    """The preset ``size`` (small, default, large), with the media size and clip length optionally changed."""
    if size not in SIZES:
        raise ConfigError(f"unknown world size {size!r}; choose one of {', '.join(SIZES)}")
    preset = SIZES[size]
    changes = {k: v for k, v in (("image_size", image_size), ("num_frames", num_frames)) if v is not None}
    for key, value in changes.items():
        if value < 1:
            raise ConfigError(f"world {key} must be at least 1, got {value}")
    return dataclasses.replace(preset, **changes)


def read_manifest(root: Path) -> dict | None:
    """The parsed ``world.json`` of ``root``, or None when it is missing or unreadable."""
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def _settings(size: str, seed: int, sizes: WorldSize) -> dict:
    return {"size": size, "seed": seed, "settings": dataclasses.asdict(sizes)}


def _same(manifest: dict, wanted: dict) -> bool:
    return json.loads(json.dumps(wanted)) == {k: manifest.get(k) for k in wanted}


def is_complete(root: Path, size: str, seed: int, sizes: WorldSize) -> bool:
    """Whether ``root`` holds a whole world of this version with these settings."""
    manifest = read_manifest(root)
    if manifest is None or manifest.get("version") != VERSION or not _same(manifest, _settings(size, seed, sizes)):
        return False
    listed = [*manifest["paths"].values(), *manifest["webdataset_shards"]]
    if not all((root / p).exists() for p in listed):
        return False
    counts = manifest["counts"]
    images = sum(1 for _ in (root / "coco" / "images").glob("*/*.jpg"))
    videos = sum(1 for _ in (root / "msrvtt" / "videos" / "all").glob("*.mp4"))
    return images == sum(counts["images"].values()) and videos == sum(counts["videos"].values())


def _check_replaceable(root: Path, size: str, seed: int, sizes: WorldSize) -> None:
    """Refuse to replace anything but an absent folder, a partial or outdated world, or an empty folder."""
    if not root.exists():
        return
    if not root.is_dir():
        raise ConfigError(f"cannot make a world at {root}: it is a file")
    manifest = read_manifest(root)
    if manifest is not None and manifest.get("version") == VERSION:
        wanted = _settings(size, seed, sizes)
        if not _same(manifest, wanted):
            have = f"size={manifest.get('size')} seed={manifest.get('seed')}"
            raise ConfigError(f"{root} holds a world with {have} ({manifest.get('settings')}); asked for size={size} "
                              f"seed={seed} ({wanted['settings']}); choose another directory or delete it")
        return
    foreign = sorted(p.name for p in root.iterdir() if p.name not in TOP_LEVEL)
    if foreign:
        raise ConfigError(f"{root} is not empty and is not a vlreg world (it holds {', '.join(foreign[:5])}); "
                          f"refusing to overwrite it")


def _second_core() -> Any:
    """A pool of one worker process where a second core is free to use, else one that runs work in place."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if usable < 2:
        return _InPlace()
    import multiprocessing

    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


class _InPlace(Executor):
    """An executor that runs each task at once, in this process."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _generate(root: Path, size: str, seed: int, sizes: WorldSize) -> dict:
    """Write every file of a world under ``root``; returns the manifest (written last)."""
    pictures, clips = plan_pictures(sizes, seed), plan_clips(sizes, seed)
    with _second_core() as pool:  # the videos, half the work, beside everything else
        videos = pool.submit(write_msrvtt.write, root, clips, sizes.image_size, sizes.num_frames, sizes.fps, seed)
        corpus = plan_corpus(sizes, seed)
        paths = write_coco.write(root, pictures, sizes.image_size)
        paths |= write_vqav2.write(root, pictures)
        shards, samples = write_webdataset.write(root, pictures["train"], sizes.shards, seed)
        paths |= write_text.write(root, corpus)
        paths |= videos.result()
    every_picture = [p for split in pictures.values() for p in split]
    every_clip = [c for split in clips.values() for c in split]
    paths |= write_attributes.write(root, every_picture, every_clip)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        **_settings(size, seed, sizes),
        "counts": {
            "images": {split: len(items) for split, items in pictures.items()},
            "videos": {split: len(items) for split, items in clips.items()},
            "captions_per_media": sizes.captions,
            "vqav2_questions": {"train2014": sum(len(p.questions) for p in pictures["train"]),
                                "val2014": sum(len(p.questions) for p in pictures["val"] + pictures["test"])},
            "msrvtt_qa": {split: sum(len(c.questions) for c in items) for split, items in clips.items()},
            "webdataset_samples": samples,
            "corpus_sentences": len(corpus),
        },
        "attributes": {"images": write_attributes.IMAGE_ATTRIBUTES, "videos": write_attributes.VIDEO_ATTRIBUTES},
        "paths": paths,
        "webdataset_shards": shards,
        "webdataset_urls": f"webdataset/pairs-{{{0:06d}..{len(shards) - 1:06d}}}.tar",
    }
    write_json(root / MANIFEST, manifest)
    return manifest


def _publish(tmp: Path, root: Path, size: str, seed: int, sizes: WorldSize) -> None:
    """Move a finished world from ``tmp`` to ``root``, replacing a partial one; tolerate a racing writer."""
    aside = None
    if root.exists():
        if is_complete(root, size, seed, sizes):  # another process finished the same world first
            return
        aside = root.with_name(f".{root.name}.replaced-{os.getpid()}")
        os.rename(root, aside)
    try:
        os.rename(tmp, root)
    except OSError:
        if not is_complete(root, size, seed, sizes):
            raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


def make_world(out_dir: str | os.PathLike, size: str = "default", seed: int = 0, *,
               image_size: int | None = None, num_frames: int | None = None) -> Path:
    """Generate the world ``size`` from ``seed`` in ``out_dir``, or reuse the complete one there; returns its path.

    ``size``: small (tests, seconds), default (the main job, under a minute) or large
    (10x the training pairs). ``image_size`` and ``num_frames`` change the preset's
    picture side and frames per clip. The same arguments give the same files.
    """
    root = Path(out_dir).expanduser().resolve()
    sizes = size_preset(size, image_size, num_frames)
    if is_complete(root, size, seed, sizes):
        return root
    _check_replaceable(root, size, seed, sizes)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        start = time.perf_counter()
        _generate(tmp, size, seed, sizes)
        _publish(tmp, root, size, seed, sizes)
        log.info("generated the %s world (seed %d) at %s in %.1f s", size, seed, root, time.perf_counter() - start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def ensure_world(root: str | os.PathLike, size: str = "default", seed: int = 0) -> Path:
    """The world at ``root``, generated first if it is not there; safe to call from every rank of a run.

    With a process group, rank 0 generates while the others wait at a barrier, then
    every rank checks that the world is complete.
    """
    from ... import distributed

    path = Path(root).expanduser().resolve()
    if distributed.is_main():
        make_world(path, size, seed)
    distributed.barrier()
    if not is_complete(path, size, seed, size_preset(size)):
        raise DataError(f"the {size} world (seed {seed}) at {path} is missing or incomplete after generation")
    return path
