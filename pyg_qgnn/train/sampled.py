r"""Mini-batch node classification on graphs too large for full-batch
training: PyG's :class:`~torch_geometric.loader.NeighborLoader` samples a
fixed number of neighbours per layer around each batch of training nodes
(`Hamilton et al., 2017 <https://arxiv.org/abs/1706.02216>`_), in one
process or in several with DDP (:mod:`pyg_qgnn.train.distributed`), with
the cross-entropy or logit matching from a teacher's logits
(:func:`~pyg_qgnn.distill.distillation_loss`). The epoch with the best
validation accuracy (sampled the same way) is kept; final scores come from
full-graph layer-wise inference (:meth:`BasicGNN.inference
<torch_geometric.nn.models.basic_gnn.BasicGNN.inference>`), batched so
memory stays bounded, and ogb's :class:`~ogb.nodeproppred.Evaluator`.
"""
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.loader import NeighborLoader

from pyg_qgnn.distill.logits import (
    check_alpha,
    check_temperature,
    distillation_loss,
)
from pyg_qgnn.quantizers import register_latent_weight_clipping
from pyg_qgnn.selection import Selection
from pyg_qgnn.train import distributed
from pyg_qgnn.train.distributed import DistributedContext
from pyg_qgnn.train.node import make_optimizer

#: ``callback(event)`` after every step (``event['phase'] == 'step'``:
#: epoch, step, steps, loss) and every epoch (``'epoch'``: epoch, loss,
#: train_acc, val_acc, seconds).
Callback = Callable[[dict], None]


def check_fanouts(fanouts: Sequence[int], num_layers: int) -> List[int]:
    r"""The neighbours sampled per layer, one count per layer (:obj:`-1`:
    all of them)."""
    fanouts = list(fanouts)
    if any(isinstance(f, bool) or not isinstance(f, int) or
           (f < 1 and f != -1) for f in fanouts):
        raise ValueError(f"'fanouts' must be positive ints or -1 (all "
                         f"neighbours) (got {fanouts})")
    if len(fanouts) != num_layers:
        raise ValueError(f"'fanouts' must give one neighbour count per layer: "
                         f"{len(fanouts)} given ({fanouts}) for "
                         f"{num_layers} layers")
    return fanouts


def neighbor_loader(data: Data, fanouts: Sequence[int], batch_size: int,
                    input_nodes: Optional[Tensor] = None, **kwargs
                    ) -> NeighborLoader:
    r"""A :class:`NeighborLoader` over :obj:`data`'s nodes and edges (other
    attributes are left behind), seeded at :obj:`input_nodes` (all nodes,
    in order, if :obj:`None`); :obj:`kwargs` go to the loader (e.g.
    :obj:`sampler`, :obj:`num_workers`)."""
    graph = Data(x=data.x, edge_index=data.edge_index, y=data.y,
                 num_nodes=data.num_nodes)
    return NeighborLoader(graph, num_neighbors=list(fanouts),
                          batch_size=batch_size, input_nodes=input_nodes,
                          **kwargs)


@torch.no_grad()
def layerwise_inference(model: nn.Module, data: Data, batch_size: int = 4096,
                        device: Optional[torch.device] = None,
                        progress: bool = False) -> Tensor:
    r"""The output of :obj:`model` (a PyG :class:`BasicGNN`) for every node
    of :obj:`data`, computed one layer at a time over all nodes with their
    full neighbourhoods, :obj:`batch_size` nodes per step: exact, and the
    memory of one layer's output rather than of a multi-hop subgraph. The
    model's mode is restored afterwards."""
    model = distributed.unwrap(model)
    if not callable(getattr(model, 'inference', None)):
        raise TypeError(f"'model' ({type(model).__name__}) has no layer-wise "
                        f"inference(loader); build it as a PyG BasicGNN "
                        f"(GraphSAGE, BinGraphSAGE, ...)")
    loader = neighbor_loader(data, [-1], batch_size)
    mode = model.training
    model.eval()
    try:
        return model.inference(loader, device, progress_bar=progress)
    finally:
        model.train(mode)


def score_splits(logits: Tensor, y: Tensor, split_idx: Dict[str, Tensor],
                 evaluator) -> Dict[str, float]:
    r"""Accuracy of :obj:`logits.argmax(-1)` on each split by ogb's
    :obj:`evaluator` (:class:`ogb.nodeproppred.Evaluator`)."""
    pred = logits.argmax(dim=-1, keepdim=True).cpu()
    y = y.view(-1, 1).cpu()
    return {key: float(evaluator.eval({'y_true': y[idx], 'y_pred': pred[idx]}
                                      )['acc'])
            for key, idx in split_idx.items()}


@torch.no_grad()
def sampled_accuracy(model: nn.Module, loader: Optional[NeighborLoader],
                     context: DistributedContext) -> float:
    r"""Accuracy on the seed nodes of every process's :obj:`loader` (its
    shard; :obj:`None` for an empty one), counted over all processes."""
    correct = count = 0
    if loader is not None:
        mode = model.training
        model.eval()
        try:
            for batch in loader:
                batch = batch.to(context.device)
                out = model(batch.x, batch.edge_index)[:batch.batch_size]
                correct += int((out.argmax(-1) ==
                                batch.y[:batch.batch_size]).sum())
                count += batch.batch_size
        finally:
            model.train(mode)
    correct, count = distributed.all_reduce_sums([correct, count], context)
    return correct / count if count else 0.0


@dataclass
class SampledResult:
    r"""The selected epoch's validation accuracy, the per-epoch curve
    (:obj:`epoch`, :obj:`loss`, :obj:`train_acc`, :obj:`val_acc`,
    :obj:`seconds`, all over every process) and the training time."""
    val_acc: float
    epoch: int
    history: List[dict] = field(default_factory=list)
    seconds: float = 0.0


def train_sampled(model: nn.Module, data: Data, train_idx: Tensor,
                  val_idx: Tensor, fanouts: Sequence[int], epochs: int,
                  batch_size: int = 1024, lr: float = 3e-3,
                  weight_decay: float = 0.0,
                  teacher_logits: Optional[Tensor] = None,
                  temperature: float = 3.0, alpha: float = 0.1,
                  context: Optional[DistributedContext] = None,
                  seed: int = 0, callback: Optional[Callback] = None,
                  num_workers: int = 0) -> SampledResult:
    r"""Trains :obj:`model` on neighbour-sampled mini-batches of
    :obj:`train_idx` and restores the epoch with the best sampled
    validation accuracy on :obj:`val_idx` (the first on ties).

    With several processes (:obj:`context` from
    :func:`~pyg_qgnn.train.distributed.init_distributed`) each one samples
    its own shard of the training nodes, DDP averages the gradients, and
    losses and accuracies are summed over all processes, so that every
    process selects the same epoch. Latent binary weights (if any) are
    centred and clipped after every step.

    Args:
        model (torch.nn.Module): On :obj:`context.device`, called as
            :obj:`model(x, edge_index)` on each sampled subgraph; its first
            :obj:`batch_size` outputs are the seed nodes'.
        data (torch_geometric.data.Data): :obj:`x`, :obj:`edge_index` and
            flat labels :obj:`y`, on the CPU (sampling runs there).
        train_idx (torch.Tensor): Training node indices.
        val_idx (torch.Tensor): Validation node indices.
        fanouts (list): Neighbours sampled per layer, one per layer.
        epochs (int): Passes over the training nodes.
        batch_size (int, optional): Seed nodes per step and process.
            (default: :obj:`1024`)
        lr (float, optional): Adam's learning rate. (default: :obj:`3e-3`)
        weight_decay (float, optional): Adam's L2 term. (default: :obj:`0`)
        teacher_logits (torch.Tensor, optional): :math:`(N, C)` logits of a
            teacher for every node: the loss becomes logit matching,
            :func:`~pyg_qgnn.distill.distillation_loss`.
            (default: :obj:`None`)
        temperature (float, optional): Its :math:`T`. (default: :obj:`3.0`)
        alpha (float, optional): Its :math:`\alpha`. (default: :obj:`0.1`)
        context (DistributedContext, optional): This process among those
            training together. (default: a single process on the CPU)
        seed (int, optional): Seed of the shuffles (the same in every
            process) and of the neighbour sampling (offset by the rank).
            (default: :obj:`0`)
        callback (callable, optional): See :obj:`Callback`.
            (default: :obj:`None`)
        num_workers (int, optional): Sampling worker processes per
            process. (default: :obj:`0`)
    """
    context = context or DistributedContext()
    for name, value in (('epochs', epochs), ('batch_size', batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"'{name}' must be a positive int "
                             f"(got {value!r})")
    temperature, alpha = check_temperature(temperature), check_alpha(alpha)
    fanouts = list(fanouts)
    if teacher_logits is not None and (
            teacher_logits.dim() != 2
            or teacher_logits.size(0) != data.num_nodes):
        raise ValueError(f"'teacher_logits' must have one row per node "
                         f"({data.num_nodes}) (got shape "
                         f"{tuple(teacher_logits.shape)})")
    sampler = distributed.training_sampler(train_idx.numel(), context,
                                           seed=seed)
    train_loader = neighbor_loader(data, fanouts, batch_size, train_idx,
                                   sampler=sampler, num_workers=num_workers)
    val_shard = distributed.shard(val_idx, context)
    val_loader = neighbor_loader(data, fanouts, batch_size, val_shard,
                                 num_workers=num_workers) \
        if val_shard.numel() else None
    torch.manual_seed(seed + context.rank)  # neighbour sampling, dropout
    own = distributed.unwrap(model)
    model = distributed.wrap(own, context)
    optimizer = make_optimizer(own, lr, weight_decay)
    clipping = register_latent_weight_clipping(optimizer, own)
    selection = Selection()
    result = SampledResult(-1.0, 0)
    start = time.perf_counter()
    try:
        for epoch in range(1, epochs + 1):
            tic = time.perf_counter()
            sampler.set_epoch(epoch)
            model.train()
            total_loss = correct = count = 0.0
            for step, batch in enumerate(train_loader, 1):
                batch = batch.to(context.device)
                size = batch.batch_size
                out = model(batch.x, batch.edge_index)[:size]
                target = batch.y[:size]
                if teacher_logits is None:
                    loss = F.cross_entropy(out, target)
                else:
                    teacher = teacher_logits[batch.n_id[:size].cpu()]
                    loss = distillation_loss(out, teacher.to(out.device),
                                             target, temperature, alpha)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total_loss += float(loss.detach()) * size
                correct += int((out.argmax(-1) == target).sum())
                count += size
                if callback is not None:
                    callback(dict(phase='step', epoch=epoch, step=step,
                                  steps=len(train_loader),
                                  loss=float(loss.detach())))
            total_loss, correct, count = distributed.all_reduce_sums(
                [total_loss, correct, count], context)
            # The bare model: DDP's forward is a collective, and the
            # validation shards may differ in size.
            val_acc = sampled_accuracy(own, val_loader, context)
            metrics = dict(epoch=epoch, loss=total_loss / count,
                           train_acc=correct / count, val_acc=val_acc,
                           seconds=time.perf_counter() - tic)
            result.history.append(metrics)
            if selection.offer(own, val_acc, epoch):
                result.val_acc, result.epoch = val_acc, epoch
            if callback is not None:
                callback(dict(metrics, phase='epoch'))
    finally:
        clipping.remove()
    selection.restore(own)
    result.seconds = time.perf_counter() - start
    return result
