"""Processors: a media file to a tensor, a raw string to model text.

Media processors (``image_train``, ``image_eval``, ``video_train``, ``video_eval``,
``npy_features``) derive from :class:`MediaProcessor`: called with a path (or, for
images, the file's bytes) they return the tensor of one item, and raise
:class:`vlreg.data.media.BadMedia` for a file that cannot be used. Text processors
(``caption``, ``question``) are callables ``str -> str``.

This package stays import-light: the registered processors live in submodules
that the registry imports on first use.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class MediaProcessor:
    """Base of media processors: ``fields(source)`` gives the item entries of one file.

    Subclasses set ``modality`` (the item key: ``"image"``, ``"video"`` or
    ``"features"``), optionally ``suffix`` (the file extension they read, which then
    replaces the one in the annotations: ``video12.mp4`` -> ``video12.npy``), and
    implement ``__call__`` returning a tensor, or a ``(tensor, mask)`` pair.

    ``deterministic`` says whether a file always gives the same tensor (no random
    augmentation); only then may a frozen encoder's output be cached
    (:mod:`vlreg.runner.feature_cache`).
    """

    modality: ClassVar[str] = "image"
    suffix: ClassVar[Optional[str]] = None
    deterministic: ClassVar[bool] = False

    def __call__(self, source: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def fields(self, source: Any) -> dict[str, Any]:
        """``{modality: tensor}``, plus ``{modality}_mask`` for processors that return a mask."""
        out = self(source)
        if isinstance(out, tuple):
            media, mask = out
            return {self.modality: media, f"{self.modality}_mask": mask}
        return {self.modality: out}
