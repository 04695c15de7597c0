r""":math:`L_2`-regularisation pruning (Bonetta et al., Applied Intelligence
2023), as swept in `Khedri et al. (2025)
<https://arxiv.org/abs/2510.22058>`_, Table 17: train with the
penalty :math:`\frac{\lambda}{2}\sum_l \lVert\mathbf{W}_l\rVert_2^2` on the
prunable weights, which pulls irrelevant weights towards zero, then prune by
magnitude (:func:`~pyg_qgnn.prune.threshold_prune` or
:func:`~pyg_qgnn.prune.magnitude_prune`).

.. code-block:: python

    from pyg_qgnn import prune
    from pyg_qgnn.train import train_node_classifier

    train_node_classifier(model, data, 200, penalty=prune.L2Penalty(1e-3))
    prune.threshold_prune(model, 1e-3)
"""
import math
from numbers import Real

import torch
from torch import Tensor, nn

from pyg_qgnn.prune.masks import Selection, prunable_parameters


def l2_penalty(model: nn.Module, rate: float,
               include: Selection = None) -> Tensor:
    r"""The penalty :math:`\frac{\lambda}{2}\sum_l\lVert\mathbf{W}_l
    \rVert_2^2` over the prunable weights of :obj:`model` (masked weights
    count as they compute, so pruned entries add nothing).

    Args:
        model (torch.nn.Module): Any model.
        rate (float): :math:`\lambda \ge 0`.
        include (callable or list of str, optional): Which weights, see
            :func:`~pyg_qgnn.prune.prunable_parameters`.
            (default: weights of at least two dimensions, no norms)
    """
    rate = _check_rate(rate)
    weights = [getattr(module, name)
               for _, module, name in prunable_parameters(model, include)]
    return 0.5 * rate * sum(w.pow(2).sum() for w in weights)


def _check_rate(rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, Real) or \
            not 0.0 <= rate < math.inf:
        raise ValueError(f"'rate' must be a finite number >= 0 (got {rate!r})")
    return float(rate)


class L2Penalty:
    r""":func:`l2_penalty` with a fixed :obj:`rate`, to pass as the
    :obj:`penalty` of :func:`~pyg_qgnn.train.train_node_classifier` and
    :func:`~pyg_qgnn.train.train_graph_classifier`.

    Args:
        rate (float): :math:`\lambda \ge 0`.
        include (callable or list of str, optional): Which weights.
            (default: weights of at least two dimensions, no norms)
    """
    def __init__(self, rate: float, include: Selection = None):
        self.rate = _check_rate(rate)
        self.include = include

    def __call__(self, model: nn.Module) -> Tensor:
        if self.rate == 0.0:
            return torch.zeros(())
        return l2_penalty(model, self.rate, self.include)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(rate={self.rate:g})'
