r"""Degree-Quant (`Tailor et al., 2021 <https://arxiv.org/abs/2008.05000>`_):
protective masks for the nodes whose aggregates carry the largest errors.

High in-degree nodes sum many quantized messages, so their aggregates show
the largest quantization errors and the widest ranges. In training, each
node is *protected* (kept in floating point at the quantization points that
act on nodes) with a probability that rises with its in-degree; protected
values neither pass the quantizer nor widen its range. In evaluation every
node is quantized.

This module holds the mechanics: the probability rule on in-degrees and the
quantizer that leaves protected rows in float. Reading the graph is the job
of :class:`pyg_qgnn.transforms.DegreeQuantMask` and of
:class:`pyg_qgnn.quantize.DegreeQuant`.
"""
import numbers
from typing import Optional, Union

import torch
from torch import Tensor

from pyg_qgnn.quantizers.functional import check_floating
from pyg_qgnn.quantizers.observers import Observer
from pyg_qgnn.quantizers.uniform import IntegerQuantizer


def check_probabilities(p_min: float, p_max: float):
    r"""Raises unless :math:`0 \le p_{min} \le p_{max} \le 1`."""
    for name, p in (('p_min', p_min), ('p_max', p_max)):
        if isinstance(p, bool) or not isinstance(p, numbers.Real):
            raise TypeError(f"'{name}' must be a number in [0, 1] (got {p!r})")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"'{name}' must be in [0, 1] (got {p})")
    if p_min > p_max:
        raise ValueError(f"'p_min' must not exceed 'p_max' (got "
                         f"p_min={p_min}, p_max={p_max})")


def protection_probability(in_degree: Tensor, p_min: float = 0.0,
                           p_max: float = 0.1,
                           batch: Optional[Tensor] = None) -> Tensor:
    r"""The probability that Degree-Quant protects each node.

    .. math::
        p_i = p_{min} + (p_{max} - p_{min})\,
        \frac{|\{j : d_j \le d_i\}|}{n}

    the in-degree :math:`d_i` ranked within its graph (the empirical
    distribution function of the in-degrees of the :math:`n` nodes), so the
    node of highest in-degree gets :math:`p_{max}` and nodes of equal
    in-degree share one probability, as in the reference implementation.

    Args:
        in_degree (torch.Tensor): In-degrees :math:`(N)`.
        p_min (float, optional): Lower bound. (default: :obj:`0.0`)
        p_max (float, optional): Upper bound. (default: :obj:`0.1`)
        batch (torch.Tensor, optional): Graph of each node :math:`(N)` for a
            mini-batch of graphs; each is ranked on its own.
            (default: :obj:`None`)
    """
    check_probabilities(p_min, p_max)
    if in_degree.dim() != 1:
        raise ValueError(f"'in_degree' must be one-dimensional (got shape "
                         f"{tuple(in_degree.shape)})")
    num_nodes = in_degree.numel()
    if num_nodes == 0:
        return torch.empty(0, device=in_degree.device)
    degree = in_degree.long()
    if batch is None:
        batch = torch.zeros_like(degree)
    elif batch.shape != degree.shape:
        raise ValueError(f"'batch' must have shape {tuple(degree.shape)} "
                         f"(got {tuple(batch.shape)})")
    # One sort key per (graph, degree); a node's rank within its graph is the
    # number of keys up to its own minus those of the earlier graphs.
    width = int(degree.max()) + 1
    key = batch.long() * width + degree
    ordered = key.sort().values
    up_to = torch.searchsorted(ordered, key, right=True)
    before = torch.searchsorted(ordered, batch.long() * width)
    graph_size = torch.bincount(batch.long())[batch.long()]
    cdf = (up_to - before).float() / graph_size.float()
    return p_min + (p_max - p_min) * cdf


class DegreeQuantizer(IntegerQuantizer):
    r"""An :class:`IntegerQuantizer` whose rows can be protected, for
    `Degree-Quant <https://arxiv.org/abs/2008.05000>`_.

    .. math::
        \hat{x}_i = \begin{cases} x_i & \text{training and } m_i = 1\\
        s\,\big(\mathrm{clamp}(\lfloor x_i/s + z\rceil, q_{min}, q_{max})
        - z\big) & \text{otherwise}\end{cases}

    The mask :math:`m` over the rows (nodes, or edges for messages) is set
    with :meth:`protect` before each training forward pass, usually by the
    hooks :class:`~pyg_qgnn.quantize.DegreeQuant` installs. The range
    :math:`s, z` is observed on the unprotected rows only, so protected
    outliers do not widen it. Protected rows get the identity gradient. In
    evaluation, with no mask, or with a mask whose length is not the number
    of rows (say the source side of a bipartite graph), every row is
    quantized.

    Args:
        bits (int, optional): Bit width in :math:`[1, 8]`. (default: :obj:`8`)
        signed (bool, optional): See :class:`IntegerQuantizer`.
            (default: :obj:`True`)
        observer (str or Observer, optional): :obj:`"abs"`, :obj:`"mom"` or
            :obj:`"per"`. (default: :obj:`"per"`)
        grad (str, optional): :obj:`"ste"` or :obj:`"clipped"`.
            (default: :obj:`"ste"`)
        symmetric (bool, optional): See :class:`IntegerQuantizer`.
            (default: :obj:`False`)
        granularity (str, optional): :obj:`"tensor"` or :obj:`"channel"`;
            per-node ranges would not survive protected rows.
            (default: :obj:`"tensor"`)
        channel_axis (int, optional): See :class:`IntegerQuantizer`.
            (default: :obj:`-1`)

    Shapes:
        - **input:** :math:`(N, *)`, rows along the first dimension
        - **output:** :math:`(N, *)`
    """
    def __init__(self, bits: int = 8, signed: bool = True,
                 observer: Union[str, Observer] = 'per', grad: str = 'ste',
                 symmetric: bool = False, granularity: str = 'tensor',
                 channel_axis: int = -1):
        if granularity == 'node':
            raise ValueError("'granularity' must be 'tensor' or 'channel' for "
                             "DegreeQuantizer (got 'node')")
        if grad == 'lsq':
            raise ValueError("'grad' must be 'ste' or 'clipped' for "
                             "DegreeQuantizer (got 'lsq')")
        super().__init__(bits, signed, granularity, observer, grad, symmetric,
                         channel_axis)
        self.protected: Optional[Tensor] = None

    def protect(self, mask: Optional[Tensor]):
        r"""Marks the rows (:obj:`True`) to keep in float in the following
        training forward passes; :obj:`None` clears the mask."""
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool \
                    or mask.dim() != 1:
                raise TypeError("'mask' must be a one-dimensional bool tensor "
                                "or None")
        self.protected = mask

    def forward(self, x: Tensor) -> Tensor:
        mask = self.protected
        if (mask is None or not self.training or not self.fake_quant_enabled
                or x.dim() == 0 or x.size(0) != mask.numel()):
            return super().forward(x)
        check_floating(x, 'x')
        kept = x[~mask]
        if kept.numel() == 0:  # every row protected
            return x
        self._prepare(kept, 'x')  # the range of the unprotected rows only
        observing = self.observer_enabled
        self.observer_enabled = False  # quantize with that range
        try:
            out = super().forward(x)
        finally:
            self.observer_enabled = observing
        return torch.where(mask.view(-1, *([1] * (x.dim() - 1))), x, out)
