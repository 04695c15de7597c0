r"""Full-batch node classification (Planetoid-style masks), with optional
logit matching from a teacher."""
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data

from pyg_qgnn.distill.logits import (
    check_alpha,
    check_temperature,
    distillation_loss,
)
from pyg_qgnn.quantizers import Quantizer, register_latent_weight_clipping
from pyg_qgnn.selection import Admissible, Selection

#: ``penalty(model) -> scalar`` added to the loss (e.g. A²Q's memory term).
Penalty = Callable[[nn.Module], Tensor]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0,
                   quant_lr: Optional[float] = None) -> torch.optim.Adam:
    r"""Adam over :obj:`model`'s parameters. Learned quantizer parameters
    (steps, bit widths) never get weight decay, which would pull them to
    zero, and take :obj:`quant_lr` when given: A²Q's bit widths move by about
    the learning rate per step, so they need a larger one than weights."""
    quant = {id(p) for m in model.modules() if isinstance(m, Quantizer)
             for p in m.parameters()}
    groups = [dict(params=[p for p in model.parameters() if id(p) not in quant],
                   weight_decay=weight_decay),
              dict(params=[p for p in model.parameters() if id(p) in quant],
                   weight_decay=0.0, lr=quant_lr or lr)]
    return torch.optim.Adam([g for g in groups if g['params']], lr=lr)


@dataclass
class NodeResult:
    r"""Validation and test accuracy of the selected epoch, and the curve
    ``(epoch, train loss, validation accuracy)`` of the run."""
    val_acc: float
    test_acc: float
    epoch: int
    history: List[Tuple[int, float, float]] = field(default_factory=list)


def _forward(model: nn.Module, data: Data) -> Tensor:
    edge_weight = getattr(data, 'edge_weight', None)
    if edge_weight is not None:
        return model(data.x, data.edge_index, edge_weight=edge_weight)
    return model(data.x, data.edge_index)


@torch.no_grad()
def evaluate_nodes(model: nn.Module, data: Data,
                   masks: Tuple[str, ...] = ('val_mask', 'test_mask')
                   ) -> Tuple[float, ...]:
    r"""Accuracy of :obj:`model` in evaluation mode on each mask."""
    model.eval()
    pred = _forward(model, data).argmax(dim=-1)
    return tuple(float((pred[data[m]] == data.y[data[m]]).float().mean())
                 for m in masks)


def train_node_classifier(model: nn.Module, data: Data, epochs: int,
                          lr: float = 0.01, weight_decay: float = 5e-4,
                          penalty: Optional[Penalty] = None,
                          quant_lr: Optional[float] = None,
                          admissible: Optional[Admissible] = None,
                          teacher_logits: Optional[Tensor] = None,
                          temperature: float = 3.0, alpha: float = 0.1
                          ) -> NodeResult:
    r"""Trains :obj:`model` with Adam on :obj:`data.train_mask` for
    :obj:`epochs` epochs, evaluates after each, and restores the weights of
    the epoch with the best validation accuracy (the first on ties) among
    those :obj:`admissible` accepts (all, if it accepts none). Latent binary
    weights (if any) are centred and clipped after every step.

    Args:
        model (torch.nn.Module): Called as :obj:`model(x, edge_index)`.
        data (torch_geometric.data.Data): With :obj:`train_mask`,
            :obj:`val_mask` and :obj:`test_mask`.
        epochs (int): At least :obj:`1`.
        lr (float, optional): Learning rate. (default: :obj:`0.01`)
        weight_decay (float, optional): Adam's L2 term.
            (default: :obj:`5e-4`)
        penalty (callable, optional): Added to the loss each step.
            (default: :obj:`None`)
        quant_lr (float, optional): Learning rate of learned quantizer
            parameters, see :func:`make_optimizer`. (default: :obj:`lr`)
        admissible (callable, optional): Called on the model after each
            evaluation; epochs where it returns :obj:`False` are selected
            only if no epoch passes. (default: :obj:`None`)
        teacher_logits (torch.Tensor, optional): :math:`(N, C)` logits of a
            teacher for every node: the loss on the training nodes becomes
            logit matching, :func:`~pyg_qgnn.distill.distillation_loss`.
            (default: :obj:`None`)
        temperature (float, optional): Its :math:`T`. (default: :obj:`3.0`)
        alpha (float, optional): Its :math:`\alpha`, the weight of the
            teacher's term. (default: :obj:`0.1`)
    """
    if epochs < 1:
        raise ValueError(f"'epochs' must be a positive integer (got {epochs})")
    temperature, alpha = check_temperature(temperature), check_alpha(alpha)
    if teacher_logits is not None:
        if teacher_logits.dim() != 2 or \
                teacher_logits.size(0) != data.num_nodes:
            raise ValueError(f"'teacher_logits' must have one row per node "
                             f"({data.num_nodes}) (got shape "
                             f"{tuple(teacher_logits.shape)})")
        teacher_logits = teacher_logits.detach()[data.train_mask]
    optimizer = make_optimizer(model, lr, weight_decay, quant_lr)
    clipping = register_latent_weight_clipping(optimizer, model)
    best = NodeResult(-1.0, 0.0, 0)
    selection = Selection(admissible)
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            optimizer.zero_grad()
            out = _forward(model, data)[data.train_mask]
            target = data.y[data.train_mask]
            loss = F.cross_entropy(out, target) if teacher_logits is None \
                else distillation_loss(out, teacher_logits, target,
                                       temperature, alpha)
            if penalty is not None:
                loss = loss + penalty(model)
            loss.backward()
            optimizer.step()
            val, test = evaluate_nodes(model, data)
            best.history.append((epoch, float(loss.detach()), val))
            if selection.offer(model, val, epoch):
                best.val_acc, best.test_acc, best.epoch = val, test, epoch
    finally:
        clipping.remove()
    selection.restore(model)
    return best
