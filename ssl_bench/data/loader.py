"""The training loader: one global permutation per epoch, split across ranks, with per-sample
augmentation seeds.

Every process draws the same permutation of the training set from ``(seed, epoch)``; global batch
``i`` is ``perm[i*B:(i+1)*B]`` and rank ``r`` takes its ``r``-th slice. Each sample's crops are drawn
from a generator seeded by ``(seed, epoch, index)``. So a run on W processes sees exactly the global
batches of a 1-process run, a resumed run (even mid-epoch, even with loader workers) continues with
the very batches and crops it would have had, and nothing depends on which worker did the work.

One loader spans all remaining epochs of a run (:class:`RunSampler` yields ``(epoch, index)``
keys), so loader workers start once per run and prefetch across epoch boundaries instead of being
torn down and restarted every epoch.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ssl_bench.data.datasets import SizedDataset


def mix_seeds(*xs: int) -> int:
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (int(x) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


class SeededTransformDataset(Dataset):
    """Apply ``transform`` under a torch generator state seeded by (seed, epoch, index)."""

    def __init__(self, base: SizedDataset, transform: Callable, seed: int, epoch: int = 0) -> None:
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        img, label = self.base[i]
        # Only the CPU generator (the transforms draw from it), saved and restored by hand: 4 us per
        # sample where torch.random.fork_rng + torch.manual_seed took ~220 us (10% of a 32 px DINO
        # sample's transform) and also reseeded the CUDA generator. Same CPU draws as before.
        g = torch.default_generator
        state = g.get_state()
        g.manual_seed(mix_seeds(self.seed, epoch, i))
        try:
            return self.transform(img), label
        finally:
            g.set_state(state)


class GlobalBatchSampler(Sampler[int]):
    """Indices of this rank's share of each global batch, from ``start_batch`` on (drop_last)."""

    def __init__(self, n: int, global_batch: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                 start_batch: int = 0) -> None:
        g = torch.Generator().manual_seed(mix_seeds(seed, epoch, 7))
        self.perm = torch.randperm(n, generator=g)
        self.global_batch, self.rank, self.world, self.start = global_batch, rank, world, start_batch
        self.per_rank = global_batch // world
        self.n_batches = n // global_batch

    def __iter__(self) -> Iterator[int]:
        for b in range(self.start, self.n_batches):
            lo = b * self.global_batch + self.rank * self.per_rank
            yield from self.perm[lo : lo + self.per_rank].tolist()

    def __len__(self) -> int:
        return (self.n_batches - self.start) * self.per_rank


class RunSampler(Sampler[tuple[int, int]]):
    """``(epoch, index)`` keys of this rank's share of every global batch of epochs ``start_epoch ..
    end_epoch - 1``, the first epoch from ``start_batch`` on: the concatenation of the per-epoch
    :class:`GlobalBatchSampler` orders."""

    def __init__(self, n: int, global_batch: int, seed: int, start_epoch: int, end_epoch: int, rank: int = 0,
                 world: int = 1, start_batch: int = 0) -> None:
        self.args = (n, global_batch, seed, rank, world)
        self.start_epoch, self.end_epoch, self.start_batch = start_epoch, end_epoch, start_batch

    def _epoch(self, epoch: int) -> GlobalBatchSampler:
        n, global_batch, seed, rank, world = self.args
        first = self.start_batch if epoch == self.start_epoch else 0
        return GlobalBatchSampler(n, global_batch, seed, epoch, rank, world, first)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for epoch in range(self.start_epoch, self.end_epoch):
            yield from ((epoch, i) for i in self._epoch(epoch))

    def __len__(self) -> int:
        n, global_batch, _, _, world = self.args
        per_epoch = n // global_batch
        return max(0, (self.end_epoch - self.start_epoch) * per_epoch - self.start_batch) * (global_batch // world)


def run_loader(dataset: SizedDataset, transform: Callable, global_batch: int, seed: int, start_epoch: int,
               end_epoch: int, rank: int, world: int, start_batch: int, num_workers: int,
               pin_memory: bool) -> DataLoader:
    """One DataLoader for the epochs ``start_epoch .. end_epoch - 1`` (workers live for all of them)."""
    ds = SeededTransformDataset(dataset, transform, seed)
    sampler = RunSampler(len(ds), global_batch, seed, start_epoch, end_epoch, rank, world, start_batch)
    return DataLoader(ds, batch_size=global_batch // world, sampler=sampler, num_workers=num_workers,
                      drop_last=True, pin_memory=pin_memory, prefetch_factor=2 if num_workers else None)
