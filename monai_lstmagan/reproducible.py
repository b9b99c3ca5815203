"""Randomness that depends on the iteration, not on the history: what makes a resumed run exact.

A run killed mid-epoch and resumed from its last checkpoint ends with the same weights as an uninterrupted
run only if every iteration sees the same batch and the same random numbers in both. Restoring the weights,
optimizers and schedules (the full checkpoint) is not enough: a shuffling ``DataLoader`` draws a new
permutation when it restarts, and the random crops / gradient-penalty interpolates continue from whatever
RNG state the process happens to be in. Two pieces fix that without storing RNG states:

- :class:`EpochPermutationSampler`: the sample order of epoch ``e`` is a permutation seeded by ``(seed, e)``,
  and it can start at any position, so a resumed epoch yields exactly its remaining samples.
- :class:`IterationSeeder`: before each batch is fetched, seeds torch, NumPy, Python and the random
  transforms from ``(seed, rank, iteration)`` and puts the sampler at the iteration's position.

Exactness holds for ``num_workers = 0`` (random transforms run in the main process); with worker processes
the order of samples is still reproduced but the workers' transform RNGs are MONAI's per-worker seeds.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from torch.utils.data import Sampler

__all__ = ["EpochPermutationSampler", "IterationSeeder", "iteration_seed"]


def iteration_seed(seed: int, rank: int, step: int, stream: int = 0) -> int:
    """A well-mixed 32-bit seed for (seed, DDP rank, step, stream), all >= 0.

    ``stream`` keeps independent uses apart: 0 the per-iteration RNGs (step = iteration), 1 the sampler's
    permutations (step = epoch).
    """
    return int(np.random.SeedSequence([int(seed), int(rank), int(step), int(stream)]).generate_state(1)[0])


class EpochPermutationSampler(Sampler[int]):
    """Shuffled indices ``0 .. num_samples - 1``, the permutation of each epoch fixed by ``(seed, epoch)``.

    Args:
        num_samples: the dataset length.
        seed: base seed of the permutations.

    ``set_position(epoch, start)`` chooses the epoch (1-based, as ignite counts) and the first position of the
    next ``iter()``; after an ``iter()`` the sampler moves on to the next epoch from position 0, so without
    :class:`IterationSeeder` it still gives a new permutation per epoch. ``len()`` is always ``num_samples``, so
    the ``DataLoader``'s length (the epoch length) does not change when an epoch is resumed part-way.
    """

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        if int(num_samples) < 1:
            raise ValueError(f"EpochPermutationSampler: num_samples must be >= 1, got {num_samples}.")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 1
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """The next ``iter()`` yields epoch ``epoch``'s permutation from index ``start`` on."""
        if not 0 <= int(start) <= self.num_samples:
            raise ValueError(f"EpochPermutationSampler: start {start} outside 0..{self.num_samples}.")
        self.epoch, self.start = int(epoch), int(start)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch``, ``[num_samples]`` int64 (independent of the global torch RNG)."""
        generator = torch.Generator().manual_seed(iteration_seed(self.seed, 0, int(epoch), stream=1))
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[int]:
        order = self.permutation(self.epoch)[self.start :].tolist()
        self.epoch, self.start = self.epoch + 1, 0
        return iter(order)

    def __len__(self) -> int:
        return self.num_samples


class IterationSeeder:
    """Ignite handler: the randomness of iteration ``i`` depends on ``(seed, rank, i)`` only.

    On every ``GET_BATCH_STARTED`` (before the batch of iteration ``i`` is fetched, so also before its
    random crops are drawn) it seeds ``torch``, ``numpy``, ``random`` and ``transforms.set_random_state``
    with :func:`iteration_seed`, and, when the trainer's sampler is an :class:`EpochPermutationSampler`,
    puts it at iteration ``i``'s position in its epoch: a run resumed at any iteration continues with the
    same batches and random numbers as the uninterrupted run.

    Args:
        seed: the run's seed (``@seed``); the DDP rank is mixed in, so ranks draw different crops.
        sampler: the training loader's sampler (``None``, a ``DistributedSampler``: not repositioned).
        transforms: the training transforms (a MONAI ``Compose`` or any object with ``set_random_state``).
        batch_size: samples per iteration (default: the trainer's ``data_loader.batch_size``).
    """

    def __init__(self, seed: int, sampler=None, transforms=None, batch_size: int | None = None) -> None:
        self.seed = int(seed)
        self.sampler = sampler if isinstance(sampler, EpochPermutationSampler) else None
        self.transforms = transforms
        self.batch_size = batch_size

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.GET_BATCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        iteration = engine.state.iteration + 1  # the iteration this batch is for
        if self.sampler is not None:
            batch_size = self.batch_size or engine.data_loader.batch_size
            position = (engine.state.iteration % engine.state.epoch_length) * batch_size
            self.sampler.set_position(engine.state.epoch, position)
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        seed = iteration_seed(self.seed, rank, iteration)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        if self.transforms is not None and hasattr(self.transforms, "set_random_state"):
            self.transforms.set_random_state(seed=seed)
