"""The iteration-keyed randomness behind exact resume (monai_lstmagan.reproducible)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.transforms import Compose, RandSpatialCropd
from torch.utils.data import DataLoader

from monai_lstmagan.reproducible import EpochPermutationSampler, IterationSeeder, iteration_seed


def test_sampler_permutation_depends_on_seed_and_epoch_only():
    sampler = EpochPermutationSampler(10, seed=3)
    first, second = list(sampler), list(sampler)  # each iter() moves on to the next epoch
    assert sorted(first) == list(range(10)) and first != second
    torch.manual_seed(123)  # the global RNG does not matter
    assert list(EpochPermutationSampler(10, seed=3)) == first
    assert list(EpochPermutationSampler(10, seed=4)) != first
    sampler.set_position(epoch=2, start=7)
    assert list(sampler) == second[7:] and len(sampler) == 10
    with pytest.raises(ValueError, match="start 11"):
        sampler.set_position(1, 11)


def run_batches(start_iteration: int, seed: int = 0, epochs: int = 3) -> list:
    """Batches (indices, random crop offsets) seen by an engine that starts at ``start_iteration``."""
    data = [{"image": np.arange(64, dtype=np.float32).reshape(1, 8, 8), "index": i} for i in range(6)]
    transforms = Compose([RandSpatialCropd("image", roi_size=(3, 3), random_size=False)])
    sampler = EpochPermutationSampler(len(data), seed=seed)

    class CroppingDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return transforms(dict(data[i]))

    loader = DataLoader(CroppingDataset(), batch_size=2, sampler=sampler, drop_last=True)
    seen: list = []
    engine = Engine(
        lambda e, b: seen.append((b["index"].tolist(), float(b["image"][:, 0, 0, 0].sum()), torch.rand(1).item()))
    )
    engine.data_loader = loader
    IterationSeeder(seed, sampler=sampler, transforms=transforms).attach(engine)
    if start_iteration:
        engine.load_state_dict({"iteration": start_iteration, "epoch_length": 3, "max_epochs": epochs})
    engine.run(loader, max_epochs=epochs)
    return seen


def test_an_engine_resumed_mid_epoch_sees_the_same_batches_and_random_numbers():
    full = run_batches(0)
    assert len(full) == 9 and len({tuple(b[0]) for b in full}) > 1  # shuffled, 3 epochs of 3 batches
    assert run_batches(4) == full[4:]  # resumed in the middle of epoch 2
    assert run_batches(0, seed=1) != full


def test_iteration_seeds_differ_by_rank_step_and_stream():
    seeds = {iteration_seed(0, r, i, s) for r in range(2) for i in range(3) for s in range(2)}
    assert len(seeds) == 12 and all(0 <= x < 2**32 for x in seeds)
