r"""The lottery-ticket test (`Frankle & Carbin, 2019
<https://arxiv.org/abs/1803.03635>`_), as run on GNNs by `Khedri et al.
(2025) <https://arxiv.org/abs/2510.22058>`_: iterative magnitude pruning
with rewinding, against random re-initialisation at the same sparsity.

A *ticket* at sparsity :math:`s` is the mask :math:`\mathbf{M}_s` found by
pruning the trained network, applied to the weights it started from
(:math:`\boldsymbol\theta_0`, or those of an early epoch
:math:`\boldsymbol\theta_k` with rewinding) and trained again:

.. math::
    \boldsymbol\theta_0 \xrightarrow{\text{train}} \boldsymbol\theta_T
    \xrightarrow{\text{prune}} \mathbf{M}_s
    \xrightarrow{\text{rewind}} \mathbf{M}_s \odot \boldsymbol\theta_0
    \xrightarrow{\text{train}} \text{ticket}

The hypothesis holds where tickets train to the dense accuracy while the
same masks on fresh random weights :math:`\mathbf{M}_s \odot
\boldsymbol\theta'_0` do not.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from pyg_qgnn.prune.magnitude import magnitude_prune
from pyg_qgnn.prune.masks import (
    Selection,
    apply_masks,
    get_masks,
    logical_tensors,
    sparsity,
)

#: ``train(model) -> score``: trains in place, returns e.g. test accuracy.
Train = Callable[[nn.Module], float]


@torch.no_grad()
def snapshot(model: nn.Module) -> Dict[str, Tensor]:
    r"""Copies of every parameter and buffer of :obj:`model` by logical
    name (masks excluded): the weights to rewind to."""
    return {key: value.detach().clone()
            for key, value in logical_tensors(model).items()}


@torch.no_grad()
def rewind(model: nn.Module, state: Dict[str, Tensor]) -> nn.Module:
    r"""Sets every parameter and buffer of :obj:`model` to its value in
    :obj:`state` (from :func:`snapshot`), keeping the masks. Names and
    shapes are checked before anything is written. Returns :obj:`model`."""
    tensors = logical_tensors(model)
    if set(tensors) != set(state):
        raise ValueError(f"'state' does not match 'model': missing "
                         f"{sorted(set(tensors) - set(state))}, unexpected "
                         f"{sorted(set(state) - set(tensors))}")
    for key, tensor in tensors.items():
        if tensor.shape != state[key].shape:
            raise ValueError(f"'{key}' has shape {tuple(state[key].shape)} in "
                             f"'state' but {tuple(tensor.shape)} in 'model'")
    for key, tensor in tensors.items():
        tensor.copy_(state[key])
    return model


@dataclass
class TicketRound:
    r"""One sparsity of the test: the achieved sparsity, the score of the
    rewound ticket and of the same masks on random weights (:obj:`None`
    at sparsity :obj:`0`, where both are the dense network)."""
    sparsity: float
    ticket: float
    random: Optional[float] = None


def iterative_magnitude_pruning(model: nn.Module, train: Train,
                                sparsities: Sequence[float],
                                rewind_to: Optional[Dict[str, Tensor]] = None,
                                reinit: Optional[Callable[[], nn.Module]] = None,
                                scope: str = 'global',
                                include: Selection = None
                                ) -> List[TicketRound]:
    r"""Trains :obj:`model`, then for each target in :obj:`sparsities` (in
    increasing order) prunes the trained weights by magnitude, rewinds the
    kept ones to :obj:`rewind_to` and trains again; each round prunes the
    previous round's ticket further.

    Args:
        model (torch.nn.Module): The network at initialisation (or at the
            epoch :obj:`rewind_to` was taken).
        train (callable): :obj:`train(model) -> score`, in place.
        sparsities (Sequence[float]): Target sparsities (fractions of the
            prunable weights) in :math:`(0, 1)`, increasing.
        rewind_to (dict, optional): A :func:`snapshot` to rewind to.
            (default: the weights of :obj:`model` on entry)
        reinit (callable, optional): :obj:`reinit()` returns a freshly,
            randomly initialised model of the same architecture; each round
            then also trains it under the ticket's masks (the control).
            (default: :obj:`None`, no control)
        scope (str, optional): :obj:`"global"` or :obj:`"layer"`, see
            :func:`~pyg_qgnn.prune.magnitude_prune`. (default: :obj:`"global"`)
        include (callable or list of str, optional): Which tensors are
            prunable. (default: weights of at least two dimensions, no norms)

    Returns:
        One :class:`TicketRound` per sparsity, after the dense round.
    """
    targets = [float(s) for s in sparsities]
    if not all(0.0 < s < 1.0 for s in targets):
        raise ValueError(f"'sparsities' must lie in (0, 1) (got {targets})")
    if any(b <= a for a, b in zip(targets, targets[1:])):
        raise ValueError(f"'sparsities' must increase (got {targets})")
    if rewind_to is None:
        rewind_to = snapshot(model)
    rounds = [TicketRound(sparsity(model, include), train(model))]
    for target in targets:
        magnitude_prune(model, target, scope, include)
        rewind(model, rewind_to)
        ticket = train(model)
        random = None
        if reinit is not None:
            control = apply_masks(reinit(), get_masks(model))
            random = train(control)
        rounds.append(TicketRound(sparsity(model, include), ticket, random))
    return rounds
