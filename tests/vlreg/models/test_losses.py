"""Stage-1 and alignment losses: exact values, hard-negative sampling, negatives across ranks."""

import math

import pytest
import torch
import torch.nn.functional as F

from vlreg.models.losses import alignment_loss, itc_loss, itm_loss, query_similarity, sample_hard_negatives


def normalised(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def loop_similarity(image_feats, text_feats):
    """Max over queries of the dot products, one pair at a time."""
    return torch.tensor([[max(float(q @ t) for q in image) for t in text_feats] for image in image_feats])


# -- ITC ----------------------------------------------------------------------------------------
def test_itc_loss_is_cross_entropy_with_label_smoothing():
    image, text = normalised(4, 3, 8), normalised(4, 8, seed=1)
    loss, sim_i2t, sim_t2i = itc_loss(image, text, temp=0.07)
    expected_sim = loop_similarity(image, text) / 0.07
    assert torch.allclose(sim_i2t, expected_sim, atol=1e-5)
    assert torch.allclose(sim_t2i, expected_sim.t(), atol=1e-5)
    targets = torch.arange(4)
    expected = (F.cross_entropy(expected_sim, targets, label_smoothing=0.1)
                + F.cross_entropy(expected_sim.t(), targets, label_smoothing=0.1)) / 2
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.allclose(query_similarity(image, text), loop_similarity(image, text), atol=1e-6)


def test_itc_loss_spreads_targets_over_captions_of_the_same_image():
    image, text = normalised(3, 2, 8), normalised(3, 8, seed=1)
    loss, sim_i2t, sim_t2i = itc_loss(image, text, temp=0.1, image_ids=torch.tensor([5, 5, 7]))
    third = 0.1 / 3  # label smoothing over 3 columns; the rest split over the positives
    targets = torch.tensor([[0.45 + third, 0.45 + third, third],
                            [0.45 + third, 0.45 + third, third],
                            [third, third, 0.9 + third]])
    expected = sum(-(targets * F.log_softmax(sim, dim=1)).sum(1).mean() for sim in (sim_i2t, sim_t2i)) / 2
    assert torch.allclose(loss, expected, atol=1e-6)
    no_ids, _, _ = itc_loss(image, text, temp=0.1)
    assert not torch.allclose(loss, no_ids)


def test_itc_loss_trains_the_temperature_and_both_sides():
    image = normalised(4, 3, 8).requires_grad_()
    text = normalised(4, 8, seed=1).requires_grad_()
    temp = torch.tensor(0.07, requires_grad=True)
    itc_loss(image, text, temp)[0].backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (image, text, temp))


# -- hard negatives -----------------------------------------------------------------------------
def draws(sim, image_ids=None, n=2000):
    generator = torch.Generator().manual_seed(0)
    return torch.stack([sample_hard_negatives(sim, sim, image_ids, generator)[0] for _ in range(n)])


def test_hard_negatives_follow_softmax_and_exclude_positives():
    sim = torch.tensor([[9.0, 0.0, math.log(3.0)],  # negatives 1 and 2 with odds 1 : 3
                        [0.0, 9.0, 0.0],
                        [0.0, 0.0, 9.0]])
    picks = draws(sim)
    assert not (picks == torch.arange(3)).any()  # the diagonal is positive
    share = (picks[:, 0] == 2).float().mean().item()
    assert abs(share - 0.75) < 0.03
    assert abs((picks[:, 1] == 0).float().mean().item() - 0.5) < 0.04


def test_hard_negatives_with_duplicate_image_ids():
    sim = torch.randn(6, 6, generator=torch.Generator().manual_seed(3)) * 5
    ids = torch.tensor([0, 0, 1, 1, 1, 2])
    negative_text, negative_image = sample_hard_negatives(sim, sim.t().contiguous(), ids)
    picks = draws(sim, ids, n=300)
    assert (ids[picks] != ids).all()  # never a caption of the same image
    assert set(picks[:, 5].tolist()) <= {0, 1, 2, 3, 4}
    assert negative_text.shape == negative_image.shape == (6,)
    everyone_same = sample_hard_negatives(sim, sim, torch.zeros(6, dtype=torch.long))
    assert (everyone_same[0] == -1).all() and (everyone_same[1] == -1).all()


def test_hard_negatives_survive_nan_and_inf():
    nan, inf = float("nan"), float("inf")
    sim = torch.tensor([
        [1.0, nan, 0.0, nan],      # NaN is never drawn: always column 2
        [nan, nan, nan, nan],      # no finite mass: uniform over the negatives 0, 2, 3
        [0.0, inf, inf, 5.0],      # the +inf entries share the mass (the positive +inf is excluded)
        [-inf, -inf, -inf, inf],   # only the positive is finite-or-better: uniform over 0, 1, 2
    ])
    with pytest.raises(RuntimeError):  # what LAVIS does: torch.multinomial(softmax(sim)) fails here
        torch.multinomial(F.softmax(sim, dim=1), 1)
    picks = draws(sim, n=1500)
    assert (picks[:, 0] == 2).all()
    for row, allowed in ((1, [0, 2, 3]), (3, [0, 1, 2])):
        counts = torch.bincount(picks[:, row], minlength=4).float() / len(picks)
        assert counts[row] == 0 and all(abs(counts[c] - 1 / 3) < 0.05 for c in allowed), (row, counts)
    assert (picks[:, 2] == 1).all()  # column 2 is row 2's positive; column 1 is the other +inf
    twin = torch.tensor([[0.0, inf, inf], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    share = (draws(twin, n=1000)[:, 0] == 1).float().mean().item()
    assert abs(share - 0.5) < 0.06


# -- ITM and alignment --------------------------------------------------------------------------
def test_itm_loss_value():
    positive = torch.tensor([[0.0, 2.0]])
    negative = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)) + math.log(2)) / 3
    assert math.isclose(itm_loss(positive, negative).item(), expected, rel_tol=1e-6)


def test_alignment_loss_values_and_mask():
    prompts = torch.zeros(2, 3, 4)
    targets = torch.arange(24, dtype=torch.float).view(2, 3, 4) / 10
    assert torch.allclose(alignment_loss(prompts, targets), (targets ** 2).mean())
    mask = torch.tensor([[True, False, False], [False, False, True]])
    expected = ((targets[0, 0] ** 2).mean() + (targets[1, 2] ** 2).mean()) / 2
    assert torch.allclose(alignment_loss(prompts, targets, mask), expected)
    with pytest.raises(ValueError, match="differ"):
        alignment_loss(prompts, targets[:, :2])


# -- two ranks ----------------------------------------------------------------------------------
def _two_rank_worker(rank, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    image_all, text_all = normalised(6, 3, 8), normalised(6, 8, seed=1)
    ids_all = torch.tensor([0, 1, 2, 2, 3, 4])
    rows = slice(3 * rank, 3 * rank + 3)
    image, text = image_all[rows].clone().requires_grad_(), text_all[rows].clone().requires_grad_()
    loss, sim_i2t, sim_t2i = itc_loss(image, text, 0.1, ids_all[rows])
    loss.backward()
    negatives = torch.stack([torch.stack(sample_hard_negatives(sim_i2t, sim_t2i)) for _ in range(50)])
    torch.save({"loss": loss.detach(), "sim": sim_i2t.detach(), "image_grad": image.grad, "text_grad": text.grad,
                "negatives": negatives}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_itc_negatives_come_from_every_rank(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_two_rank_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    image_all = normalised(6, 3, 8).requires_grad_()
    text_all = normalised(6, 8, seed=1).requires_grad_()
    loss, sim, _ = itc_loss(image_all, text_all, 0.1, torch.tensor([0, 1, 2, 2, 3, 4]))
    loss.backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # each rank's loss covers its rows against all 6 columns; their mean is the one-process loss
    assert torch.allclose((ranks[0]["loss"] + ranks[1]["loss"]) / 2, loss, atol=1e-6)
    assert torch.allclose(torch.cat([r["sim"] for r in ranks]), sim, atol=1e-5)
    # gathered with gradients: a rank's gradient is that of the summed rank losses (DDP then averages)
    for r, out in enumerate(ranks):
        rows = slice(3 * r, 3 * r + 3)
        assert torch.allclose(out["image_grad"], 2 * image_all.grad[rows], atol=1e-5)
        assert torch.allclose(out["text_grad"], 2 * text_all.grad[rows], atol=1e-5)
        own = torch.arange(3) + 3 * r  # a row's own pair, in gathered numbering, is never its negative
        assert not (out["negatives"] == own).any()
        assert ((out["negatives"] >= 0) & (out["negatives"] < 6)).all()
