r"""Multi-process data-parallel training with PyTorch's own
:mod:`torch.distributed` and
:class:`~torch.nn.parallel.DistributedDataParallel` (DDP), for scripts
started by :obj:`torchrun`.

.. code-block:: python

    from pyg_qgnn.train import distributed

    with distributed.session('cpu') as context:     # gloo; 'cuda': nccl
        sampler = distributed.training_sampler(len(train_idx), context)
        model = distributed.wrap(model.to(context.device), context)
        ...                                          # train; every process
        totals = distributed.all_reduce_sums([correct, count], context)
        if context.is_main:                          # only rank 0 writes
            deploy.save(distributed.unwrap(model), path)

Started without :obj:`torchrun` (or with one process) the same code runs
in a single process: no process group, the sampler holds every index, the
reductions return their input.
"""
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

#: The variables torchrun sets for every process it starts.
TORCHRUN_VARIABLES = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')
DEVICES = ('cpu', 'cuda')


@dataclass(frozen=True)
class DistributedContext:
    r"""Where this process stands among the ones training together.

    Args:
        rank (int): This process, :obj:`0 .. world_size - 1`.
        world_size (int): Processes in all.
        local_rank (int): This process among those on its machine (its GPU).
        device (torch.device): Where this process computes.
        backend (str, optional): :obj:`"gloo"` or :obj:`"nccl"`; :obj:`None`
            in a single process.
    """
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        r"""Rank 0: the process that reports and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def _env_int(key: str, default: int) -> int:
    text = os.environ.get(key)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {key} must be an integer "
                         f"(got {text!r}); it is set by torchrun") from None


def init_distributed(device: str = 'cpu') -> DistributedContext:
    r"""Joins the process group that :obj:`torchrun` describes in the
    environment (:obj:`RANK`, :obj:`WORLD_SIZE`, :obj:`LOCAL_RANK`,
    :obj:`MASTER_ADDR`, :obj:`MASTER_PORT`), with the gloo backend on the
    CPU and nccl on GPUs (one per process, :obj:`cuda:LOCAL_RANK`). Without
    those variables, or with a world of one, this is a single process and
    no group is created. Leave it with :func:`teardown` (or use
    :func:`session`).

    Args:
        device (str, optional): :obj:`"cpu"` or :obj:`"cuda"`.
            (default: :obj:`"cpu"`)
    """
    if device not in DEVICES:
        raise ValueError(f"'device' must be one of {DEVICES} (got {device!r})")
    if device == 'cuda' and not torch.cuda.is_available():
        raise ValueError("'device' is 'cuda' but CUDA is not available here")
    rank = _env_int('RANK', 0)
    world_size = _env_int('WORLD_SIZE', 1)
    local_rank = _env_int('LOCAL_RANK', 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"environment variables RANK ({rank}) and WORLD_SIZE "
                         f"({world_size}) must satisfy 0 <= RANK < WORLD_SIZE")
    if device == 'cuda':
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"'device' is 'cuda' but this process (local rank "
                f"{local_rank}) has no GPU of its own: "
                f"{torch.cuda.device_count()} visible; start at most that "
                f"many processes per machine (torchrun --nproc_per_node)")
        where = torch.device('cuda', local_rank)
        torch.cuda.set_device(where)
    else:
        where = torch.device('cpu')
    if world_size == 1:
        return DistributedContext(device=where)
    backend = 'nccl' if device == 'cuda' else 'gloo'
    if not dist.is_available():
        raise RuntimeError('torch.distributed is not available in this '
                           'PyTorch build')
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank, where, backend)


def teardown(context: DistributedContext):
    r"""Leaves the process group :func:`init_distributed` joined."""
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def session(device: str = 'cpu') -> Iterator[DistributedContext]:
    r""":func:`init_distributed` for the block, :func:`teardown` after it
    (also when it raises)."""
    context = init_distributed(device)
    try:
        yield context
    finally:
        teardown(context)


def barrier(context: DistributedContext):
    r"""Waits until every process gets here."""
    if context.distributed:
        if context.backend == 'nccl':
            dist.barrier(device_ids=[context.device.index])
        else:
            dist.barrier()


@contextmanager
def rank_zero_first(context: DistributedContext) -> Iterator[None]:
    r"""Runs the block in rank 0 first and in the other processes after it,
    e.g. to write a dataset's processed files once before the others read
    them."""
    if not context.is_main:
        barrier(context)
    yield
    if context.is_main:
        barrier(context)


def check_world_size(num_items: int, context: DistributedContext):
    r"""Fails unless every process can have at least one of
    :obj:`num_items` training items."""
    if isinstance(num_items, bool) or not isinstance(num_items, int) or \
            num_items < 1:
        raise ValueError(f"'num_items' must be a positive int (got "
                         f"{num_items!r}): there is nothing to train on")
    if context.world_size > num_items:
        raise ValueError(
            f"{context.world_size} processes (torchrun --nproc_per_node) but "
            f"only {num_items} training nodes: each process needs a shard of "
            f"its own; start at most {num_items}")


def training_sampler(num_items: int, context: DistributedContext,
                     shuffle: bool = True, seed: int = 0
                     ) -> DistributedSampler:
    r"""A :class:`~torch.utils.data.distributed.DistributedSampler` of
    :obj:`num_items` training items (positions into the training nodes):
    each process draws its own shard, padded so that every process takes
    the same number of steps (DDP synchronizes each one). Call its
    :meth:`set_epoch` every epoch for a fresh shuffle.

    Raises:
        ValueError: If there are more processes than items.
    """
    check_world_size(num_items, context)
    return DistributedSampler(range(num_items),
                              num_replicas=context.world_size,
                              rank=context.rank, shuffle=shuffle, seed=seed)


def shard(index: Tensor, context: DistributedContext) -> Tensor:
    r"""This process's contiguous part of :obj:`index` for evaluation (no
    padding, so that summed counts are exact; a part may be empty)."""
    return index.tensor_split(context.world_size)[context.rank]


def all_reduce_sums(values: Sequence[float], context: DistributedContext
                    ) -> List[float]:
    r"""The sums of :obj:`values` over all processes, in every process (so
    that all of them take the same decisions, e.g. model selection)."""
    if not context.distributed:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64,
                          device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def wrap(model: nn.Module, context: DistributedContext) -> nn.Module:
    r""":obj:`model` (already on :obj:`context.device`) in
    :class:`~torch.nn.parallel.DistributedDataParallel`, which all-reduces
    its gradients in every backward pass; :obj:`model` itself in a single
    process."""
    if not context.distributed:
        return model
    device_ids = [context.device.index] if context.device.type == 'cuda' \
        else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    r"""The model inside a :class:`DistributedDataParallel` wrapper."""
    return model.module if isinstance(model, DistributedDataParallel) \
        else model
