"""``python -m vlreg.data.world --out DIR [--size small|default|large] [--seed N] [--baseline]``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

from ...cli import guarded
from .generate import make_world, read_manifest
from .plan import SIZES


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlreg.data.world",
                                     description="Generate the synthetic world in the official dataset formats.")
    parser.add_argument("--out", required=True, help="the world's root folder (reused when already complete)")
    parser.add_argument("--size", choices=list(SIZES), default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=None, help="side of pictures and frames in pixels")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip")
    parser.add_argument("--baseline", action="store_true",
                        help="also print the text-only baseline's scores on the evaluation splits (JSON)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    root = make_world(args.out, args.size, args.seed, image_size=args.image_size, num_frames=args.frames)
    counts = read_manifest(root)["counts"]
    print(f"{args.size} world (seed {args.seed}) at {root}, ready in {time.perf_counter() - start:.1f} s")
    print(f"  images {counts['images']}, videos {counts['videos']}, "
          f"VQAv2 questions {counts['vqav2_questions']}, corpus {counts['corpus_sentences']} sentences")
    if args.baseline:
        from .baseline import text_only_baseline

        print(json.dumps(text_only_baseline(root), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
