"""The versions CI tests: what is installed, and the lowest that setup.py allows.

    python .ci/versions.py LABEL                  one line: LABEL, Python and the installed versions
                                                  of torch, transformers, timm, tokenizers, huggingface_hub
    python .ci/versions.py --lowest NAME ...      NAME==<lower bound in setup.py> for each NAME, for pip

It reads package metadata and setup.py as text, so it imports none of those packages.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import sys
from pathlib import Path

REPORTED = ("torch", "torchvision", "transformers", "timm", "tokenizers", "huggingface_hub")
SETUP = Path(__file__).resolve().parent.parent / "setup.py"


def installed(label: str) -> str:
    """``versions (LABEL): python 3.11.7, torch 2.13.0+cpu, ...``; ``missing`` for a package not installed."""
    parts = [f"python {platform.python_version()}"]
    for name in REPORTED:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} missing")
    return f"versions ({label}): " + ", ".join(parts)


def lowest(name: str) -> str:
    """``NAME==X`` for setup.py's requirement ``NAME>=X``."""
    found = re.search(rf'"{re.escape(name)}>=([0-9][0-9.]*)', SETUP.read_text(encoding="utf-8"))
    if found is None:
        raise SystemExit(f"setup.py states no lower bound for {name} (expected \"{name}>=X...\")")
    return f"{name}=={found.group(1)}"


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--lowest":
        print(" ".join(lowest(name) for name in sys.argv[2:]))
    elif len(sys.argv) == 2:
        print(installed(sys.argv[1]))
    else:
        raise SystemExit(__doc__)
