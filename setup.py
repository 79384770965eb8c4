from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
RECIPES = ("configs", "projects", "benchmarks/suites")  # vlreg/recipes.py reads them under vlreg/_recipes/


class BuildWithRecipes(build_py):
    """Builds the package with a copy of the recipes inside it, at ``vlreg/_recipes/<folder>``, so that an
    installed vlreg has them; an editable install reads the checkout's own."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for folder in RECIPES:
            for file in sorted((HERE / folder).rglob("*.yaml")):
                target = Path(self.build_lib, "vlreg", "_recipes", file.relative_to(HERE))
                self.mkpath(str(target.parent))
                self.copy_file(str(file), str(target))


setup(
    name="vlreg",
    version="0.1.0",
    description="Vision-language and video-language models assembled from frozen parts, by name",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["vlreg", "vlreg.*"]),
    include_package_data=True,
    # torch, transformers and timm: the lowest versions allowed are those CI tests (.ci/run runs the model, LLM
    # and interop tests with them; .ci/versions.py reads them from here). transformers: 5.21 computes logits
    # at chosen positions only (a boolean logits_to_keep), and 6 removes what 5.x deprecates. timm: 1.0.21
    # builds ViTs on the meta device (dry runs). torch: 2.13.0 is the CPU build CI installs.
    install_requires=[
        "torch>=2.13.0",
        "transformers>=5.21.0,<6",
        "tokenizers>=0.21",
        "safetensors>=0.4",
        "timm>=1.0.21",
        "omegaconf>=2.3",
        "decord>=0.6",
        "av>=12",
        "pycocoevalcap>=1.2",
        "webdataset>=0.2.90",
        "numpy",
        "pillow",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest>=8"],
    },
    entry_points={
        "console_scripts": ["vlreg=vlreg.cli:main"],
    },
    cmdclass={"build_py": BuildWithRecipes},
)
