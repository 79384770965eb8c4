"""Retrieval recall: ranks by hand and as the BLIP evaluation gives them, ties against the model, bad inputs."""

import numpy as np
import pytest

from vlreg.errors import DataError
from vlreg.metrics import retrieval_recall
from vlreg.metrics.retrieval import retrieval_ranks

# 3 media items with 2 texts each; rows are media, columns texts.
SIM = np.array([
    [0.9, 0.1, 0.8, 0.2, 0.3, 0.0],
    [0.7, 0.6, 0.5, 0.1, 0.2, 0.4],
    [0.2, 0.3, 0.9, 0.8, 0.1, 0.05],
])
TXT2MEDIA = [0, 0, 1, 1, 2, 2]
MEDIA2TXT = [[0, 1], [2, 3], [4, 5]]


def test_retrieval_ranks_and_recall_by_hand():
    text_ranks, media_ranks = retrieval_ranks(SIM, TXT2MEDIA, MEDIA2TXT)
    # media 0: its best text (0.9) beats all; media 1: best own 0.5, beaten by 0.7 and 0.6;
    # media 2: best own 0.1, beaten by 0.2, 0.3, 0.9, 0.8
    assert text_ranks.tolist() == [1, 3, 5]
    # text t: how many other media score at least the text's own media, plus 1
    assert media_ranks.tolist() == [1, 3, 3, 3, 3, 2]
    scores = retrieval_recall(SIM, TXT2MEDIA, MEDIA2TXT)
    expected = {
        "txt_r1": 100 / 3, "txt_r5": 100.0, "txt_r10": 100.0, "txt_r_mean": (100 / 3 + 200) / 3,
        "txt_medr": 3.0, "txt_meanr": 3.0,
        "img_r1": 100 / 6, "img_r5": 100.0, "img_r10": 100.0, "img_r_mean": (100 / 6 + 200) / 3,
        "img_medr": 3.0, "img_meanr": 2.5,
    }
    expected["r_mean"] = (expected["txt_r_mean"] + expected["img_r_mean"]) / 2
    assert scores == pytest.approx(expected, rel=1e-12)
    assert set(scores) == set(expected)


def test_retrieval_recall_at_5_and_10():
    # one text per media; text t's own media is beaten by exactly ranks[t] - 1 others
    ranks = [1, 2, 5, 6, 10, 11, 12, 1, 3, 4, 7, 8]
    n = len(ranks)
    sim = np.zeros((n, n))
    for t, rank in enumerate(ranks):
        others = [m for m in range(n) if m != t]
        sim[t, t] = 0.5
        sim[others[: rank - 1], t] = 0.9
        sim[others[rank - 1:], t] = 0.1
    scores = retrieval_recall(sim, list(range(n)), [[t] for t in range(n)])
    assert scores["img_r1"] == pytest.approx(100 * 2 / 12)
    assert scores["img_r5"] == pytest.approx(100 * 6 / 12)  # ranks 1, 2, 5, 1, 3, 4
    assert scores["img_r10"] == pytest.approx(100 * 10 / 12)  # and 6, 10, 7, 8
    assert scores["img_medr"] == 5.5 and scores["img_meanr"] == sum(ranks) / 12


def blip_style_ranks(sim, txt2media, media2txt):
    """The BLIP/ALBEF evaluation loop (0-based ranks from a descending argsort), for untied scores."""
    text_ranks = [min(int(np.where(np.argsort(row)[::-1] == t)[0][0]) for t in media2txt[m])
                  for m, row in enumerate(sim)]
    media_ranks = [int(np.where(np.argsort(col)[::-1] == txt2media[t])[0][0]) for t, col in enumerate(sim.T)]
    return np.array(text_ranks) + 1, np.array(media_ranks) + 1


def test_retrieval_matches_the_blip_evaluation_and_takes_torch_tensors():
    import torch

    rng = np.random.default_rng(0)
    media, per_media = 20, 5
    txt2media = np.repeat(np.arange(media), per_media)
    media2txt = [list(range(m * per_media, (m + 1) * per_media)) for m in range(media)]
    sim = rng.standard_normal((media, media * per_media)) + 2.0 * (np.arange(media)[:, None] == txt2media)
    ours = retrieval_ranks(sim, txt2media, media2txt)
    reference = blip_style_ranks(sim, txt2media, media2txt)
    np.testing.assert_array_equal(ours[0], reference[0])
    np.testing.assert_array_equal(ours[1], reference[1])
    scores = retrieval_recall(sim, txt2media, media2txt)
    assert scores["txt_r1"] == 100 * np.mean(reference[0] == 1)
    assert scores["img_r10"] == 100 * np.mean(reference[1] <= 10)
    sim32 = sim.astype(np.float32)
    assert retrieval_recall(torch.from_numpy(sim32), torch.from_numpy(txt2media), media2txt) == \
        retrieval_recall(sim32, txt2media, media2txt)


def test_retrieval_ties_count_against_the_model():
    # a constant matrix: every correct candidate ranks after every wrong one
    text_ranks, media_ranks = retrieval_ranks(np.ones((3, 6)), TXT2MEDIA, MEDIA2TXT)
    assert text_ranks.tolist() == [5, 5, 5] and media_ranks.tolist() == [3] * 6
    sim = np.array([[0.9, 0.9, 0.9, 0.1], [0.2, 0.3, 0.4, 0.9]])
    # media 0 owns texts 0 and 1, tied at the top with text 2 (wrong): rank 2; the other correct
    # text does not push it down. Text 2 (media 1): media 0 scores 0.9 > 0.4: rank 2
    text_ranks, media_ranks = retrieval_ranks(sim, [0, 0, 1, 1], [[0, 1], [2, 3]])
    assert text_ranks.tolist() == [2, 1] and media_ranks.tolist() == [1, 1, 2, 1]


def test_retrieval_rejects_inconsistent_inputs():
    with pytest.raises(DataError, match=r"media2txt\[1\] = \[2\] disagrees with txt2media"):
        retrieval_recall(SIM, TXT2MEDIA, [[0, 1], [2], [4, 5]])
    with pytest.raises(DataError, match="one integer per text \\(6\\)"):
        retrieval_recall(SIM, TXT2MEDIA[:5], MEDIA2TXT)
    with pytest.raises(DataError, match="one list per media item \\(3\\)"):
        retrieval_recall(SIM, TXT2MEDIA, MEDIA2TXT[:2])
    with pytest.raises(DataError, match="media item 2 has no text"):
        retrieval_recall(SIM, TXT2MEDIA, [[0, 1], [2, 3], []])
    with pytest.raises(DataError, match=r"media2txt\[0\] holds text indices outside 0..5"):
        retrieval_recall(SIM, TXT2MEDIA, [[0, -1], [2, 3], [4, 5]])
    with pytest.raises(DataError, match="NaN"):
        retrieval_recall(np.full((3, 6), np.nan), TXT2MEDIA, MEDIA2TXT)
    with pytest.raises(DataError, match="shape"):
        retrieval_recall(SIM[0], TXT2MEDIA, MEDIA2TXT)
