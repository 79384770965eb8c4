"""Retrieval recall in both directions, as in the BLIP / ALBEF / LAVIS evaluation.

Names follow LAVIS: ``txt_*`` is text retrieval (each media item queries the texts),
``img_*`` is media retrieval (each text queries the media items), whatever the media are
(images or videos).

Ties count against the model: a correct candidate ranks after every wrong candidate
with the same score, so a constant similarity matrix scores the worst possible ranks,
not perfect ones. Without ties the ranks are those of the BLIP evaluation.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from ..registry import register

RECALL_AT = (1, 5, 10)


def _numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, in any dtype or on any device
        values = values.detach().cpu()
        values = values.float() if values.is_floating_point() else values
    return np.asarray(values)


def _as_matrix(sim: Any) -> np.ndarray:
    sim = _numpy(sim)
    if sim.dtype.kind != "f":  # float32 stays as it is: a COCO 5k x 25k matrix is large
        sim = sim.astype(np.float64)
    if sim.ndim != 2 or 0 in sim.shape:
        raise DataError(f"retrieval: sim must be a non-empty [num_media, num_texts] matrix, got shape {sim.shape}")
    if np.isnan(sim).any():
        raise DataError("retrieval: sim holds NaN")
    return sim


def _correct_pairs(num_media: int, num_texts: int, txt2media: Sequence[int], media2txt: Sequence[Sequence[int]]) -> np.ndarray:
    """``[num_media, num_texts]`` boolean: text t describes media m; the two mappings must agree."""
    txt2media = _numpy(txt2media)
    if txt2media.shape != (num_texts,) or not np.issubdtype(txt2media.dtype, np.integer):
        raise DataError(f"retrieval: txt2media must hold one integer per text ({num_texts}), got shape {txt2media.shape}")
    if len(media2txt) != num_media:
        raise DataError(f"retrieval: media2txt must hold one list per media item ({num_media}), got {len(media2txt)}")
    if txt2media.min() < 0 or txt2media.max() >= num_media:
        raise DataError(f"retrieval: txt2media holds media indices outside 0..{num_media - 1}")
    correct = np.zeros((num_media, num_texts), dtype=bool)
    correct[txt2media, np.arange(num_texts)] = True
    for m, texts in enumerate(media2txt):
        indices = np.asarray(texts, dtype=np.int64).reshape(-1)
        if indices.size == 0:
            raise DataError(f"retrieval: media item {m} has no text in media2txt")
        if indices.min() < 0 or indices.max() >= num_texts:
            raise DataError(f"retrieval: media2txt[{m}] holds text indices outside 0..{num_texts - 1}")
        listed = np.zeros(num_texts, dtype=bool)
        listed[indices] = True
        if not np.array_equal(listed, correct[m]):
            raise DataError(
                f"retrieval: media2txt[{m}] = {sorted(np.flatnonzero(listed).tolist())} disagrees with txt2media, "
                f"which gives media {m} the texts {sorted(np.flatnonzero(correct[m]).tolist())}"
            )
    return correct


def retrieval_ranks(sim: Any, txt2media: Sequence[int], media2txt: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks ``(text_ranks [num_media], media_ranks [num_texts])``.

    ``text_ranks[m]`` is the rank of the best-ranked correct text of media ``m`` among all
    texts; ``media_ranks[t]`` the rank of the media of text ``t`` among all media items.
    A rank is 1 + the number of wrong candidates scoring at least as high (ties count
    against the model). Arguments as in :func:`retrieval_recall`.
    """
    sim = _as_matrix(sim)
    correct = _correct_pairs(*sim.shape, txt2media, media2txt)
    wrong = ~correct
    best_text = sim.max(axis=1, where=correct, initial=-np.inf, keepdims=True)  # [M, 1]
    text_ranks = 1 + ((sim >= best_text) & wrong).sum(axis=1)
    own_media = sim.max(axis=0, where=correct, initial=-np.inf)  # [T]: each text has one media
    media_ranks = 1 + ((sim >= own_media) & wrong).sum(axis=0)
    return text_ranks, media_ranks


def _summary(prefix: str, ranks: np.ndarray) -> dict[str, float]:
    recalls = {f"{prefix}_r{k}": 100.0 * float(np.mean(ranks <= k)) for k in RECALL_AT}
    return {
        **recalls,
        f"{prefix}_r_mean": sum(recalls.values()) / len(recalls),
        f"{prefix}_medr": float(np.median(ranks)),
        f"{prefix}_meanr": float(np.mean(ranks)),
    }


@register("metric", "retrieval_recall")
def retrieval_recall(sim: Any, txt2media: Sequence[int], media2txt: Sequence[Sequence[int]]) -> dict[str, float]:
    """Recall@1/5/10, median and mean rank of retrieval in both directions (BLIP/LAVIS names).

    Args:
        sim: ``[num_media, num_texts]`` similarities (numpy array, torch tensor or nested lists);
            higher is more similar.
        txt2media: ``[num_texts]``, the index of the media item each text describes.
        media2txt: ``num_media`` lists, the indices of the texts of each media item (e.g. the
            5 captions of a COCO image); must agree with ``txt2media``.

    Returns:
        ``txt_r1, txt_r5, txt_r10`` (percent of media items whose best-ranked correct text is in
        the top k texts), ``txt_r_mean`` (their mean), ``txt_medr``, ``txt_meanr`` (median and
        mean 1-based rank); the same ``img_*`` for text-to-media retrieval (percent of texts
        whose media item is in the top k); ``r_mean``, the mean of ``txt_r_mean`` and
        ``img_r_mean``. Ties count against the model (see the module docstring).
    """
    text_ranks, media_ranks = retrieval_ranks(sim, txt2media, media2txt)
    text, media = _summary("txt", text_ranks), _summary("img", media_ranks)
    return {**text, **media, "r_mean": (text["txt_r_mean"] + media["img_r_mean"]) / 2}
