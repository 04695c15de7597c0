r"""Unstructured magnitude pruning (`Han et al., 2015
<https://arxiv.org/abs/1510.00149>`_), global or layer-wise, as compared in
`Khedri et al. (2025) <https://arxiv.org/abs/2510.22058>`_.

.. code-block:: python

    from pyg_qgnn import prune

    prune.magnitude_prune(model, 0.5)                  # one global threshold
    prune.magnitude_prune(model, 0.5, scope='layer')   # 50% in every layer
    ...  # fine-tune with any training loop: the masks hold
    prune.make_permanent(model)
"""
import math
from numbers import Integral, Real
from typing import List, Union

import torch
from torch import Tensor, nn

from pyg_qgnn.prune.masks import (
    Selection,
    Target,
    get_mask,
    prunable_parameters,
    set_mask,
)

SCOPES = ('global', 'layer')
Amount = Union[float, int]


def _scores(targets: List[Target]) -> List[Tensor]:
    r""":math:`|w|` of each effective weight; pruned entries score
    :math:`-1`, below every kept one, so they stay pruned."""
    scores = []
    for _, module, name in targets:
        weight = getattr(module, name).detach()
        score = weight.abs().float()
        mask = get_mask(module, name)
        if mask is not None:
            score = score.masked_fill(~mask, -1.0)
        scores.append(score)
    return scores


def _count(amount: Amount, total: int, what: str) -> int:
    r"""How many of :obj:`total` weights :obj:`amount` prunes."""
    if isinstance(amount, bool) or not isinstance(amount, (Integral, Real)):
        raise TypeError(f"'amount' must be a fraction in [0, 1) or an integer "
                        f"count (got {type(amount).__name__})")
    if isinstance(amount, Integral):
        if not 0 <= amount <= total:
            raise ValueError(f"'amount' must be a count in 0..{total}, the "
                             f"number of weights {what} (got {amount})")
        return int(amount)
    if not 0.0 <= amount < 1.0:  # also rejects NaN
        raise ValueError(f"'amount' must be a fraction in [0, 1) "
                         f"(got {amount})")
    return int(round(float(amount) * total))


def _lowest(scores: Tensor, count: int) -> Tensor:
    r"""A keep-mask dropping the :obj:`count` lowest scores; ties go to the
    earlier index, so exactly :obj:`count` are dropped."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if count:
        order = torch.sort(scores.reshape(-1), stable=True).indices
        keep[order[:count]] = False
    return keep.view(scores.shape)


@torch.no_grad()
def magnitude_prune(model: nn.Module, amount: Amount, scope: str = 'global',
                    include: Selection = None) -> nn.Module:
    r"""Masks the smallest-magnitude weights of :obj:`model` in place.

    With :obj:`scope="global"` one threshold :math:`\tau` is shared by all
    prunable tensors (global unstructured pruning), so layers end with
    different sparsities; with :obj:`scope="layer"` each tensor gets its own
    threshold and the same share is pruned in every layer (fine-grained
    pruning):

    .. math::
        M_{ij} = \mathbb{1}\big[|W_{ij}| > \tau\big],\qquad
        \tau = \text{the } k\text{-th smallest } |W| \text{ over the scope}

    Exactly :math:`k` weights are pruned (ties broken by position). The
    count includes weights pruned before, which are never revived: asking
    for less than the model already has leaves it unchanged.

    Args:
        model (torch.nn.Module): Any model (PyG layers included).
        amount (float or int): A fraction in :math:`[0, 1)` of the weights
            in the scope, or an integer count (per tensor with
            :obj:`scope="layer"`, as :mod:`torch.nn.utils.prune` counts).
        scope (str, optional): :obj:`"global"` or :obj:`"layer"`.
            (default: :obj:`"global"`)
        include (callable or list of str, optional): Which tensors are
            prunable, see :func:`prunable_parameters`.
            (default: weights of at least two dimensions, no norms)

    Returns:
        :obj:`model`, with its masks set.
    """
    if scope not in SCOPES:
        raise ValueError(f"'scope' must be one of {SCOPES} (got {scope!r})")
    targets = prunable_parameters(model, include)
    scores = _scores(targets)
    if scope == 'global':
        total = sum(s.numel() for s in scores)
        count = _count(amount, total, 'in the prunable tensors')
        flat = torch.cat([s.reshape(-1) for s in scores])
        keep = _lowest(flat, count).split([s.numel() for s in scores])
        keeps = [k.view(s.shape) for k, s in zip(keep, scores)]
    else:
        smallest = min(targets, key=lambda t: getattr(t[1], t[2]).numel())
        _count(amount, getattr(smallest[1], smallest[2]).numel(),
               f"of '{smallest[0]}', the smallest prunable tensor")
        keeps = [_lowest(s, _count(amount, s.numel(), 'per tensor'))
                 for s in scores]
    for (_, module, name), score, keep in zip(targets, scores, keeps):
        set_mask(module, name, keep & (score >= 0))
    return model


@torch.no_grad()
def threshold_prune(model: nn.Module, threshold: float,
                    include: Selection = None) -> nn.Module:
    r"""Masks every prunable weight with :math:`|w| \le` :obj:`threshold`
    (magnitude thresholding, the second step of :math:`L_2` pruning, see
    :func:`~pyg_qgnn.prune.l2_penalty`). Returns :obj:`model`."""
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or \
            not 0.0 <= threshold < math.inf:
        raise ValueError(f"'threshold' must be a finite number >= 0 "
                         f"(got {threshold!r})")
    targets = prunable_parameters(model, include)
    for (_, module, name), score in zip(targets, _scores(targets)):
        set_mask(module, name, score > threshold)
    return model
