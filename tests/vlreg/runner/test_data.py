import random

import numpy as np
import pytest
import torch
from tests.vlreg.runner.toys import Numbers, NumberStream

from vlreg.errors import DataError
from vlreg.runner.data import TrainBatches, TrainStream, eval_loader
from vlreg.runner.distributed_setup import ShardedEvalSampler
from vlreg.runner.seeding import isolated_rng, rng_state, seed_all, set_rng_state


def global_batches(n, micro, accum, world, epoch=0, seed=3):
    """The sets of samples of each optimizer step, over all ranks and micro-steps."""
    samplers = [TrainBatches(n, micro, accum, world, rank, seed) for rank in range(world)]
    per_rank = []
    for sampler in samplers:
        sampler.set_epoch(epoch)
        per_rank.append([[i for i, _ in keys] for keys in sampler])
    steps = []
    for k in range(len(per_rank[0]) // accum):
        steps.append(sorted(i for rank in per_rank for micro_batch in rank[k * accum:(k + 1) * accum] for i in micro_batch))
    return steps


def test_a_step_sees_the_same_samples_whatever_the_split():
    reference = global_batches(50, micro=8, accum=1, world=1)
    assert len(reference) == 6  # 50 // 8, the incomplete last batch dropped
    assert global_batches(50, micro=4, accum=2, world=1) == reference
    assert global_batches(50, micro=4, accum=1, world=2) == reference
    assert global_batches(50, micro=2, accum=2, world=2) == reference
    seen = [i for step in reference for i in step]
    assert len(set(seen)) == 48  # no sample twice within an epoch
    assert global_batches(50, 8, 1, 1, epoch=1) != reference  # a new order each epoch


def test_sampler_resumes_at_a_micro_batch_and_seeds_each_sample():
    sampler = TrainBatches(40, 4, 2, 1, 0, seed=5)
    full = list(sampler)
    sampler.set_epoch(0, start=3)
    assert list(sampler) == full[3:] and len(sampler) == len(full) - 3
    seeds = {seed for keys in full for _, seed in keys}
    assert len(seeds) == 40  # one seed per sample
    sampler.set_epoch(1)
    assert {seed for keys in sampler for _, seed in keys}.isdisjoint(seeds)


def test_rng_state_round_trip_and_isolation():
    seed_all(7)
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    with isolated_rng(123):
        inside = (random.random(), np.random.rand(), torch.rand(1).item())
    second = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == second  # isolation left no trace
    with isolated_rng(123):
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == inside
    loaded = torch.load(_saved(state), weights_only=True)
    set_rng_state(loaded)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def _saved(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def batches(stream, count):
    return [stream.next() for _ in range(count)]


def test_augmentations_do_not_depend_on_workers_or_resume():
    data = Numbers(24)
    plain = TrainStream(data, micro_batch=4, accum_steps=1, world_size=1, rank=0, seed=1, num_workers=0)
    workers = TrainStream(data, micro_batch=4, accum_steps=1, world_size=1, rank=0, seed=1, num_workers=2)
    a, b = batches(plain, 9), batches(workers, 9)  # crosses into the second epoch (6 per epoch)
    assert all(torch.equal(x["x"], y["x"]) and x["name"] == y["name"] for x, y in zip(a, b))
    assert plain.state_dict() == {"epoch": 1, "batches": 3, "bad_media": 0}
    resumed = TrainStream(data, micro_batch=4, accum_steps=1, world_size=1, rank=0, seed=1, num_workers=2)
    resumed.load_state_dict({"epoch": 0, "batches": 4})
    assert all(torch.equal(x["x"], y["x"]) for x, y in zip(a[4:], batches(resumed, 5)))
    noise = a[0]["x"] - data.x[a[0]["index"]]
    assert noise.abs().min() > 0  # the augmentation is really random


def test_iterable_stream_resumes_by_replaying():
    stream = TrainStream(NumberStream(20), micro_batch=4, accum_steps=1, world_size=1, rank=0, seed=2)
    a = batches(stream, 7)  # 5 per epoch
    resumed = TrainStream(NumberStream(20), micro_batch=4, accum_steps=1, world_size=1, rank=0, seed=2)
    resumed.load_state_dict({"epoch": 0, "batches": 3})
    assert all(torch.equal(x["x"], y["x"]) for x, y in zip(a[3:], batches(resumed, 4)))
    assert stream.steps_per_epoch is None and stream.state_dict() == {"epoch": 1, "batches": 2, "bad_media": 0}


def test_too_small_a_training_set_is_a_data_error():
    with pytest.raises(DataError, match="fewer than one global batch of 16"):
        TrainStream(Numbers(10), micro_batch=8, accum_steps=2, world_size=1, rank=0, seed=0)


@pytest.mark.parametrize("length,world", [(7, 2), (10, 3), (2, 4), (0, 2)])
def test_eval_shards_are_disjoint_and_cover_the_dataset_in_order(length, world):
    parts = [list(ShardedEvalSampler(length, rank, world)) for rank in range(world)]
    assert [i for part in parts for i in part] == list(range(length))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_eval_loader_gives_a_rank_its_slice():
    loader = eval_loader(Numbers(7, noise=0.0), batch_size=2, rank=1, world_size=2)
    assert [b["index"].tolist() for b in loader] == [[3, 4], [5, 6]]
