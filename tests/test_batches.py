import pytest
import torch

from ddpm.errors import ConfigError
from ddpm.training.batches import BatchPlan, derived_seed


def test_each_epoch_is_a_permutation_without_the_last_partial_batch():
    plan = BatchPlan(num_images=10, batch_size=3)
    assert plan.batches_per_epoch == 3
    for epoch in range(3):
        seen = torch.cat([plan.indices(epoch * 3 + k) for k in range(3)])
        assert len(set(seen.tolist())) == 9 and seen.max() < 10
    assert not torch.equal(plan.indices(0), plan.indices(3))  # a new order each epoch


def test_plan_is_a_pure_function_of_seed_and_index():
    a, b = BatchPlan(100, 8, seed=4), BatchPlan(100, 8, seed=4)
    later = [a.indices(m) for m in (30, 2, 17)]
    assert all(torch.equal(x, b.indices(m)) for x, m in zip(later, (30, 2, 17)))
    g1, g2 = a.generator(5, torch.device("cpu")), b.generator(5, torch.device("cpu"))
    assert torch.equal(torch.randn(4, generator=g1), torch.randn(4, generator=g2))
    assert not torch.equal(BatchPlan(100, 8, seed=5).indices(0), a.indices(0))


def test_ranks_split_the_global_batch_of_one_process():
    single = BatchPlan(64, 8, seed=1)
    ranks = [BatchPlan(64, 4, world_size=2, rank=r, seed=1) for r in range(2)]
    for m in range(20):
        assert torch.equal(torch.cat([p.indices(m) for p in ranks]), single.indices(m))


def test_too_small_a_data_set():
    with pytest.raises(ConfigError, match="the data set has 5 images, fewer than one batch of 8; lower --batch-size"):
        BatchPlan(5, 4, world_size=2)


def test_derived_seeds_differ_and_are_stable():
    assert derived_seed(0, 1, 2) == derived_seed(0, 1, 2)
    assert len({derived_seed(0, 1, m) for m in range(1000)}) == 1000
    assert 0 <= derived_seed(3, 4) < 2**63
