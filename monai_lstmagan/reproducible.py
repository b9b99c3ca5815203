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

- :class:`IterationBatchSampler`: batches of ``(index, seed, first)`` triples, ``seed`` the iteration's; the
  dataset (:class:`monai_lstmagan.data.datasets.SliceSampleDataset`) seeds its random transforms at the first
  sample of each batch, so the crops are the same whether they are drawn in the main process or in a
  DataLoader worker (``num_workers > 0``), and equal to those :class:`IterationSeeder` gives with 0 workers.

A dataset that takes plain indices (the through-plane path's ``CacheDataset``) is exact with ``num_workers = 0``
only: in worker processes its transform RNGs are MONAI's per-worker seeds.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from torch.utils.data import Sampler

__all__ = ["EpochPermutationSampler", "IterationBatchSampler", "IterationSeeder", "iteration_seed", "current_rank"]


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


def current_rank() -> int:
    """The DDP rank of this process (0 without ``torch.distributed``)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class IterationBatchSampler(Sampler[list]):
    """Batches of ``batch_size`` samples of ``sampler`` (the last incomplete one dropped), each sample as an
    ``(index, seed, first)`` triple: ``seed`` = :func:`iteration_seed` ``(seed, rank, iteration)`` of the batch's
    iteration, ``first`` True for the batch's first sample.

    The iteration of the first batch comes from where the sampler starts: an :class:`EpochPermutationSampler`'s
    ``(epoch, start)`` (so a resumed epoch is numbered right), a ``DistributedSampler``'s ``epoch`` (1-based, set
    by :class:`IterationSeeder` at every epoch start), else a count of the batches given so far.

    Args:
        sampler: the index sampler.
        batch_size: samples per batch.
        seed: the run's seed.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, seed: int = 0) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"IterationBatchSampler: batch_size must be >= 1, got {batch_size}.")
        self.sampler, self.batch_size, self.seed = sampler, int(batch_size), int(seed)
        self._batches_given = 0

    def _first_iteration(self) -> int:
        per_epoch = len(self)
        if isinstance(self.sampler, EpochPermutationSampler):
            return (self.sampler.epoch - 1) * per_epoch + self.sampler.start // self.batch_size + 1
        epoch = getattr(self.sampler, "epoch", None)
        if isinstance(epoch, int):
            return max(epoch - 1, 0) * per_epoch + 1
        return self._batches_given + 1

    def __iter__(self) -> Iterator[list]:
        iteration, rank, batch = self._first_iteration(), current_rank(), []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                seed = iteration_seed(self.seed, rank, iteration)
                yield [(int(i), seed, j == 0) for j, i in enumerate(batch)]
                iteration, batch = iteration + 1, []
                self._batches_given += 1

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size


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
        # a DistributedSampler behind a batch sampler: MONAI's trainer does not see it, so its epoch is set here
        self.epoch_sampler = sampler if self.sampler is None and hasattr(sampler, "set_epoch") else None
        self.transforms = transforms
        self.batch_size = batch_size

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.position_sampler)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self)

    def position_sampler(self, engine: Engine) -> None:
        """Put the sampler at the next iteration's position (at EPOCH_STARTED: before DataLoader workers take
        their first indices, which they do when the epoch's iterator is made)."""
        if self.sampler is not None:
            batch_size = self.batch_size or engine.data_loader.batch_size
            position = (engine.state.iteration % engine.state.epoch_length) * batch_size
            self.sampler.set_position(engine.state.epoch, position)
        if self.epoch_sampler is not None:
            self.epoch_sampler.set_epoch(engine.state.epoch)

    def __call__(self, engine: Engine) -> None:
        iteration = engine.state.iteration + 1  # the iteration this batch is for
        self.position_sampler(engine)
        rank = current_rank()
        seed = iteration_seed(self.seed, rank, iteration)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        if self.transforms is not None and hasattr(self.transforms, "set_random_state"):
            self.transforms.set_random_state(seed=seed)
