"""Distributed data parallel (DDP) plumbing: PyTorch's own engine, nothing home-made.

Launch with ``torchrun --nproc_per_node=N -m minigpt train ...``. torchrun starts N copies of the
program and tells each one who it is through environment variables: ``RANK`` (0..N-1 over all
machines), ``LOCAL_RANK`` (0..N-1 on this machine: the GPU to use) and ``WORLD_SIZE`` (N).
:func:`setup` reads them and joins the process group (NCCL on CUDA, gloo on CPU); without them
it does nothing and training runs as one ordinary process.

How :func:`minigpt.train.train` uses it:

* every rank draws the SAME global batch for a step (``BatchSampler.batch(step)`` depends only
  on (seed, step)) and keeps its own slice of rows ``[r·B/W, (r+1)·B/W)``;
* the model is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, which averages
  the gradients over ranks during ``backward()`` -- the mean of the W slice-means is the mean
  over the whole batch, so the update equals single-process training on the global batch;
* with gradient accumulation the all-reduce is skipped (:func:`sync_context`, DDP's
  ``no_sync``) on every micro-step but the last: gradients pile up locally and are averaged
  once per optimizer step;
* only rank 0 logs, evaluates, writes metrics and saves checkpoints (:func:`is_main`); every
  rank reads the same checkpoint to resume.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
import torch.nn as nn

ENV_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a run: ``rank`` of ``world_size`` (``local_rank`` on this machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one process that logs and saves."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) set RANK and WORLD_SIZE, even for one process
    (``--nproc_per_node=1`` then runs the DDP code path, a handy check on a single GPU)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def dist_info() -> DistInfo:
    """Rank and world size: from the process group when it is up, else from torchrun's variables."""
    if tdist.is_available() and tdist.is_initialized():
        return DistInfo(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                    int(os.environ.get("LOCAL_RANK", "0")))


def setup(device_type: str = "cpu") -> DistInfo:
    """Join the process group when launched by torchrun (idempotent); a no-op for one process.

    ``device_type`` picks the backend: ``"nccl"`` for CUDA (and sets this process's GPU to
    ``cuda:LOCAL_RANK``), ``"gloo"`` otherwise (CPU; MPS has no collective backend, so DDP on
    Apple GPUs is not supported).
    """
    info = dist_info()
    if not launched_by_torchrun() or (tdist.is_available() and tdist.is_initialized()):
        return info
    if not tdist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed: run one process, without torchrun")
    if device_type == "mps":
        raise ValueError("DDP needs CUDA (NCCL) or CPU (gloo); MPS has no collective backend: use --device cpu")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
        tdist.init_process_group(backend, device_id=torch.device("cuda", info.local_rank))
    else:
        tdist.init_process_group(backend)
    return dist_info()


def cleanup() -> None:
    """Leave the process group (waits for every rank first); a no-op when none is up."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (a no-op for one process)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()


def device_for_rank(device: torch.device, info: DistInfo) -> torch.device:
    """Under DDP on CUDA each process drives its own GPU, ``cuda:LOCAL_RANK``."""
    if info.enabled and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` when a process group is up, else the model unchanged.

    DDP broadcasts rank 0's weights at construction, then all-reduces (averages) gradients in
    buckets while ``backward()`` runs, overlapping communication with computation.
    """
    if not (tdist.is_available() and tdist.is_initialized()):
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sync_context(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync()`` when ``sync`` is False (skip the all-reduce on an accumulation
    micro-step), a do-nothing context otherwise or when ``model`` is not DDP."""
    if not sync and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def shard_rows(n_rows: int, info: DistInfo) -> slice:
    """Rows ``[r·B/W, (r+1)·B/W)`` of a global batch of ``B = n_rows`` for rank ``r`` of ``W``."""
    if n_rows % info.world_size:
        raise ValueError(f"batch_size {n_rows} is the GLOBAL batch and must be divisible by the number of "
                         f"processes ({info.world_size}); each process takes an equal slice of it")
    per = n_rows // info.world_size
    return slice(info.rank * per, (info.rank + 1) * per)


def mean_over_ranks(value: float, device: torch.device) -> float:
    """The average of a Python number over all ranks (for logging the global loss)."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    tdist.all_reduce(t)
    return t.item() / tdist.get_world_size()

