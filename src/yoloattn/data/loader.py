"""Batches for the YOLO loss: collate function, epoch-aware batch sampler, DataLoader builder.

Determinism: the batch sampler yields ``(index, epoch, seed)`` keys and
:class:`yoloattn.data.dataset.YoloDataset` derives every random draw of a sample from those
three numbers, so the same seed gives the same batches whatever the number of workers, and
persistent workers need no epoch update. Shuffling uses a ``torch.Generator`` seeded with
``seed + epoch``. Multi-process training (one process per GPU under ``torchrun``) passes
``rank``/``world_size``: each rank gets a disjoint ``1 / world_size`` share of every epoch
(the index list is padded by repetition so all ranks run the same number of batches, like
``torch.utils.data.DistributedSampler``).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = [
    "Batch",
    "YoloBatchSampler",
    "YoloDataLoader",
    "build_dataloader",
    "collate_fn",
    "default_workers",
    "seed_worker",
]

LOGGER = logging.getLogger(__name__)

SampleKey = tuple[int, int, int]


class Batch(NamedTuple):
    """One batch: ``images`` uint8 ``[N, 3, H, W]`` RGB; ``targets`` float32 ``[M, 6]`` =
    (image index, class, x, y, w, h) normalised to the batch image size; ``paths``; ``shapes``
    (per image ``((h0, w0), ((h / h0, w / w0), (padw, padh)))`` or None for a mosaic)."""

    images: torch.Tensor
    targets: torch.Tensor
    paths: tuple[str, ...]
    shapes: tuple[Any, ...]


def collate_fn(batch: Sequence[tuple[torch.Tensor, torch.Tensor, str, Any]]) -> Batch:
    """Stack images and concatenate targets, writing each target's image index in column 0."""
    if not batch:
        raise ValueError("collate_fn got an empty batch")
    images, targets, paths, shapes = zip(*batch)
    sizes = {tuple(im.shape) for im in images}
    if len(sizes) != 1:
        raise ValueError(
            f"images of one batch must share a size, got {sorted(sizes)}; use rect batch groups "
            "(build_dataloader does) or a square imgsz"
        )
    out_targets = []
    for i, t in enumerate(targets):
        t = t.clone()
        t[:, 0] = float(i)
        out_targets.append(t)
    return Batch(torch.stack(images, 0), torch.cat(out_targets, 0), tuple(paths), tuple(shapes))


class YoloBatchSampler(Sampler[list[SampleKey]]):
    """Yields batches of ``(index, epoch, seed)`` keys.

    Args:
        n: dataset length.
        batch_size: samples per batch (ignored when ``groups`` is given).
        shuffle: reshuffle every epoch (whole groups are shuffled when ``groups`` is given).
        seed: shuffle and augmentation seed (>= 0).
        rank, world_size: this process's share in distributed training (rank -1: all data).
        drop_last: drop the last incomplete batch (no effect with ``groups``).
        groups: fixed index groups that must stay together, e.g. rect batches.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = -1,
        world_size: int = 1,
        drop_last: bool = False,
        groups: Sequence[Sequence[int]] | None = None,
    ) -> None:
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if world_size < 1 or (rank != -1 and not 0 <= rank < world_size):
            raise ValueError(
                f"rank {rank} is not valid for world_size {world_size} (use -1 for single process)"
            )
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank = rank
        self.world_size = world_size if rank != -1 else 1
        self.drop_last = drop_last
        self.groups = [list(g) for g in groups] if groups is not None else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: changes the shuffle order and the augmentation of every sample."""
        self.epoch = int(epoch)

    def _order(self, n: int) -> list[int]:
        if not self.shuffle:
            return list(range(n))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(n, generator=g).tolist()

    def _share(self, items: list[Any]) -> list[Any]:
        if self.world_size == 1:
            return items
        total = -(-len(items) // self.world_size) * self.world_size
        padded = (items * (-(-total // len(items))))[:total]
        return padded[max(self.rank, 0) :: self.world_size]

    def _batches(self) -> list[list[int]]:
        if self.groups is not None:
            groups = [self.groups[i] for i in self._order(len(self.groups))]
            return self._share(groups)
        idx = self._share(self._order(self.n))
        batches = [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for b in self._batches():
            yield [(i, self.epoch, self.seed) for i in b]

    def __len__(self) -> int:
        if self.groups is not None:
            return -(-len(self.groups) // self.world_size)
        per_rank = -(-self.n // self.world_size)
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)


class YoloDataLoader(DataLoader):
    """A ``DataLoader`` with :meth:`set_epoch` forwarded to its :class:`YoloBatchSampler`."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)  # type: ignore[union-attr]
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def seed_worker(worker_id: int) -> None:
    """Set up a dataloader worker process: one torch thread (the workers and the training
    process's own threads would otherwise oversubscribe the CPUs), and Python/numpy global RNGs
    seeded from torch's per-worker seed (for third-party code; yoloattn's augmentation does not
    use global RNG state)."""
    torch.set_num_threads(1)
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers(world_size: int = 1) -> int:
    """A default number of dataloader workers per process: ``min(8, CPUs per process - 1)``, one
    CPU left to the process itself (0 on a single CPU)."""
    return max(0, min(8, _cpus() // max(world_size, 1) - 1))


def build_dataloader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    workers: int,
    seed: int = 0,
    rank: int = -1,
    world_size: int = 1,
    drop_last: bool = False,
    pin_memory: bool | None = None,
) -> YoloDataLoader:
    """DataLoader over a :class:`~yoloattn.data.dataset.YoloDataset` with deterministic batches.

    A rect dataset keeps its batch groups (its ``batch_size`` must match); ``shuffle`` then
    shuffles whole groups. ``workers`` is capped at the CPUs available per rank. Call
    ``loader.set_epoch(epoch)`` before each epoch.
    """
    n = len(dataset)  # type: ignore[arg-type]
    groups = dataset.batch_groups() if hasattr(dataset, "batch_groups") else None
    if groups is not None and getattr(dataset, "batch_size", batch_size) != batch_size:
        raise ValueError(
            f"the rect dataset was built with batch_size={dataset.batch_size} but the loader asks for "  # type: ignore[attr-defined]
            f"{batch_size}; build both with the same batch size"
        )
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    sampler = YoloBatchSampler(n, batch_size, shuffle, seed, rank, world_size, drop_last, groups)
    nw = min(workers, max(1, _cpus() // max(world_size, 1)), len(sampler)) if workers else 0
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    generator = torch.Generator().manual_seed(seed)
    if hasattr(dataset, "seed"):
        dataset.seed = seed  # int indexing then matches the loader's samples
    return YoloDataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=nw,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=nw > 0,
    )
