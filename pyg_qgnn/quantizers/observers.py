r"""Range observers: they track the :math:`[\min, \max]` a quantizer covers.

An observer sees a 2-D view ``(C, L)`` of the tensor, one row per range it
tracks (one row for per-tensor ranges, one per channel or node otherwise),
and keeps running ``min_val``/``max_val`` buffers of shape ``(C,)`` so that
the ranges checkpoint with the model.

======================  ======  ===========================================
class                   name    range tracked during training
======================  ======  ===========================================
:class:`MinMaxObserver`  abs     extremes of everything seen (outlier-prone)
:class:`MomentumObserver` mom    exponential moving average of batch extremes
:class:`PercentileObserver` per  moving average of batch percentiles,
                                 estimated on a random subsample
======================  ======  ===========================================
"""
from typing import Tuple, Union

import torch
from torch import Tensor, nn

from pyg_qgnn.quantizers.base import LazyStateMixin
from pyg_qgnn.quantizers.functional import check_finite


class Observer(LazyStateMixin, nn.Module):
    r"""Base class: subclasses define :meth:`batch_range` and, for running
    statistics, :meth:`combine`."""
    _lazy_state = ('min_val', 'max_val')

    def __init__(self):
        super().__init__()
        self.register_buffer('min_val', torch.empty(0))
        self.register_buffer('max_val', torch.empty(0))

    def reset_parameters(self):
        self.min_val = self.min_val.new_empty(0)
        self.max_val = self.max_val.new_empty(0)

    @property
    def initialized(self) -> bool:
        return self.min_val.numel() > 0

    def batch_range(self, x2d: Tensor) -> Tuple[Tensor, Tensor]:
        if x2d.size(0) == 1:  # a full reduction is ~25x faster than dim=1
            lo, hi = torch.aminmax(x2d)
            return lo.reshape(1), hi.reshape(1)
        return torch.aminmax(x2d, dim=1)

    def combine(self, old: Tensor, new: Tensor, is_min: bool) -> Tensor:
        return new

    @torch.no_grad()
    def forward(self, x2d: Tensor,
                restart: bool = False) -> Tuple[Tensor, Tensor]:
        r"""Updates the running range with the rows of :obj:`x2d` and returns
        it. :obj:`restart`, or a change in the number of rows (a per-node
        range on a new graph), starts the statistics afresh."""
        lo, hi = self.batch_range(x2d.detach())
        check_finite(lo, hi)
        if (not restart and self.initialized
                and self.min_val.shape == lo.shape):
            lo = self.combine(self.min_val, lo, True)
            hi = self.combine(self.max_val, hi, False)
        self.min_val, self.max_val = lo.clone(), hi.clone()
        return self.min_val, self.max_val


class MinMaxObserver(Observer):
    r"""Tracks the absolute extremes of all values seen (``"abs"``)."""
    def combine(self, old, new, is_min):
        return torch.minimum(old, new) if is_min else torch.maximum(old, new)


class MomentumObserver(Observer):
    r"""Exponential moving average of each batch's extremes (``"mom"``).

    .. math::
        r \leftarrow r + m\,(r_{batch} - r)

    Args:
        momentum (float, optional): The weight :math:`m \in (0, 1]` of the
            newest batch. (default: :obj:`0.1`)
    """
    def __init__(self, momentum: float = 0.1):
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"'momentum' must be in (0, 1] (got {momentum})")
        self.momentum = momentum

    def combine(self, old, new, is_min):
        return old + self.momentum * (new - old)

    def extra_repr(self) -> str:
        return f'momentum={self.momentum}'


class PercentileObserver(MomentumObserver):
    r"""Moving average of each batch's lower and upper percentiles
    (``"per"``), robust to outliers.

    A full sort or :obj:`kthvalue` over every activation dominates training
    time on large graphs, so each row is estimated on at most
    :obj:`sample_size` randomly drawn entries.

    Args:
        percentile (float, optional): The upper percentile in
            :math:`(50, 100]`; the lower one is :math:`100 - p`.
            (default: :obj:`99.9`)
        momentum (float, optional): See :class:`MomentumObserver`.
            (default: :obj:`0.1`)
        sample_size (int, optional): Entries drawn per row.
            (default: :obj:`4096`)
    """
    def __init__(self, percentile: float = 99.9, momentum: float = 0.1,
                 sample_size: int = 4096):
        super().__init__(momentum)
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"'percentile' must be in (50, 100] "
                             f"(got {percentile})")
        if sample_size < 1:
            raise ValueError(f"'sample_size' must be positive "
                             f"(got {sample_size})")
        self.percentile = percentile
        self.sample_size = sample_size

    def batch_range(self, x2d):
        if x2d.size(1) > self.sample_size:
            # The sample may miss a NaN or Inf; min/max propagate them.
            check_finite(*torch.aminmax(x2d))
            idx = torch.randint(x2d.size(1), (self.sample_size, ),
                                device=x2d.device)
            x2d = x2d[:, idx]
        q = torch.tensor([1.0 - self.percentile / 100, self.percentile / 100],
                         device=x2d.device)
        lo, hi = torch.quantile(x2d.float(), q, dim=1).to(x2d.dtype)
        return lo, hi

    def extra_repr(self) -> str:
        return (f'percentile={self.percentile}, momentum={self.momentum}, '
                f'sample_size={self.sample_size}')


OBSERVERS = {
    'abs': MinMaxObserver,
    'mom': MomentumObserver,
    'per': PercentileObserver,
}


def make_observer(observer: Union[str, Observer]) -> Observer:
    r"""Returns an observer from its name (``"abs"``, ``"mom"``, ``"per"``)
    or a ready instance."""
    if isinstance(observer, Observer):
        return observer
    if observer not in OBSERVERS:
        raise ValueError(f"'observer' must be one of {sorted(OBSERVERS)} or "
                         f"an Observer instance (got {observer!r})")
    return OBSERVERS[observer]()
