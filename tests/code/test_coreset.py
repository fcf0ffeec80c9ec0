"""Chunked greedy k-center coreset."""

import torch

from flows.anomaly.coreset import coreset_indices, kcenter_greedy


def coverage_radius(x, idx):
    return torch.cdist(x, x[idx]).min(1).values.max().item()


def test_kcenter_greedy_is_farthest_first():
    x = torch.arange(11, dtype=torch.float32)[:, None]
    assert kcenter_greedy(x, 3, start=0)[0].tolist() == [0, 10, 5]


def test_coreset_size_determinism_and_uniqueness():
    x = torch.randn(10_000, 8, generator=torch.Generator().manual_seed(0))
    a = coreset_indices(x, 0.05, chunk_size=2048, seed=1)
    b = coreset_indices(x, 0.05, chunk_size=2048, seed=1)
    assert torch.equal(a, b)
    assert len(a) == len(torch.unique(a))
    assert abs(len(a) - 500) <= 5


def test_coreset_covers_better_than_a_random_subset():
    g = torch.Generator().manual_seed(0)
    # clustered data: greedy k-center covers every cluster tightly, a random subset leaves outliers far
    centers = torch.randn(50, 8, generator=g) * 10
    x = centers[torch.randint(0, 50, (6000,), generator=g)] + torch.randn(6000, 8, generator=g) * 0.1
    idx = coreset_indices(x, 0.05, chunk_size=2000, seed=0)
    rand = torch.randperm(len(x), generator=g)[: len(idx)]
    assert coverage_radius(x, idx) < 0.5 * coverage_radius(x, rand)


def test_ratio_one_keeps_everything():
    x = torch.randn(100, 4)
    assert coreset_indices(x, 1.0).tolist() == list(range(100))



def test_a_selection_continues_from_an_existing_bank_and_stops_when_covered():
    old = torch.tensor([[0.0], [1.0], [2.0]])
    new = torch.tensor([[0.1], [1.1], [1.9], [10.0], [11.0]])  # only 10 and 11 lie outside the old bank's cover
    from flows.anomaly.coreset import nearest_sq_distance

    d = nearest_sq_distance(new, old)
    idx, r = kcenter_greedy(new, 5, min_d=d, stop_below=0.25)
    assert sorted(idx.tolist()) == [3, 4] and r <= 0.25
    radius = []
    assert coreset_indices(new, 1.0 - 1e-9, existing=old, stop_below=0.25, radius=radius).tolist() == [3, 4]
    assert radius and radius[0] <= 0.25
