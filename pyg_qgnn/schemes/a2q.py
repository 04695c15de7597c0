r"""A²Q as a scheme: learned per-node steps and bit widths for node
features, learned per-channel steps for weights, and the memory penalty."""
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from pyg_qgnn.quantizers import IntegerQuantizer, a2q
from pyg_qgnn.quantizers.a2q import A2QQuantizer
from pyg_qgnn.quantizers.functional import GRADS, check_bits
from pyg_qgnn.schemes.base import QuantScheme, check_points


@dataclass
class A2Q(QuantScheme):
    r"""`A²Q <https://arxiv.org/abs/2302.00193>`_, aggregation-aware
    mixed-precision quantization (Zhu et al., 2023): every node's features
    get a learned step size and bit width
    (:class:`~pyg_qgnn.quantizers.A2QQuantizer`), trained with the local
    gradient of the node's own quantization error, and weights a symmetric
    step per output channel, taken from their current range, at
    :obj:`weight_bits` bits. (A learned weight step, as in the paper, moves
    by its learning rate per Adam step whatever the weights' scale; at 8
    bits, where steps are ~1e-3, any rate that also moves bit widths
    destroys the weights within a few epochs.)

    .. math::
        \mathcal{L} = \mathcal{L}_{task} + \lambda\,N\,
        (\bar{b} - b_{target})^2

    Add :meth:`memory_penalty` (the second term, over the last forward pass)
    to the task loss so that the average bit width :math:`\bar{b}` (memory
    weighted, :func:`~pyg_qgnn.quantizers.a2q.average_bits`) moves towards
    :obj:`target_avg_bits`; without a target, bit widths only follow the
    local gradient, which raises them where values saturate.

    Node parameters are indexed by node id on the training graph. Nodes of
    another graph (a graph classification batch, an inductive node task) take
    the pair whose largest representable value is nearest to their largest
    feature magnitude (the paper's nearest-neighbour rule); with
    :obj:`num_groups`, a fixed pool of that many pairs serves every graph
    through the same rule, as the paper does for graph-level tasks.

    .. code-block:: python

        scheme = A2Q(init_bits=4, target_avg_bits=3.0)
        qmodel = quantize_model(model, scheme)
        out = qmodel(x, edge_index)
        loss = F.cross_entropy(out[mask], y[mask])
        loss = loss + scheme.memory_penalty(qmodel)

    Args:
        init_bits (int, optional): Initial bit width of node features, in
            :math:`[1, 8]`. (default: :obj:`4`)
        target_avg_bits (float, optional): The average bit width the memory
            penalty pulls towards, in :math:`[1, 8]`; :obj:`None` for no
            penalty. (default: :obj:`None`)
        memory_weight (float, optional): :math:`\lambda \ge 0`.
            (default: :obj:`0.1`)
        weight_bits (int, optional): Bit width of the weights; :obj:`None`
            for :obj:`init_bits`. (default: :obj:`None`)
        num_groups (int, optional): A fixed pool of step/bit-width pairs shared
            by all graphs; :obj:`None` for one pair per node of the training
            graph. (default: :obj:`None`)
        grad (str, optional): Gradient of the node features, :obj:`"ste"` or
            :obj:`"clipped"`. (default: :obj:`"clipped"`)
        points (Sequence[str], optional): Among :obj:`"input"`,
            :obj:`"weight"`, :obj:`"aggregate"`, :obj:`"output"` (one row per
            node; messages, one per edge, have no node parameters).
            (default: :obj:`("input", "weight")`)
    """
    init_bits: int = 4
    target_avg_bits: Optional[float] = None
    memory_weight: float = 0.1
    weight_bits: Optional[int] = None
    num_groups: Optional[int] = None
    grad: str = 'clipped'
    points: Sequence[str] = ('input', 'weight')

    def __post_init__(self):
        check_bits(self.init_bits)
        if self.weight_bits is None:
            self.weight_bits = self.init_bits
        check_bits(self.weight_bits)
        if self.target_avg_bits is not None:
            a2q.check_target_bits(self.target_avg_bits)
        if isinstance(self.memory_weight, bool) or not isinstance(
                self.memory_weight, (int, float)) or not \
                self.memory_weight >= 0:
            raise ValueError(f"'memory_weight' must be a number >= 0 "
                             f"(got {self.memory_weight!r})")
        a2q.check_num_groups(self.num_groups)
        if self.grad not in GRADS:
            raise ValueError(f"'grad' must be one of {GRADS} "
                             f"(got {self.grad!r})")
        self.points = check_points(self.points, A2Q_POINTS)

    def quantizer(self, point, layer):
        if point not in self.points:
            return None
        if point == 'weight':
            return IntegerQuantizer(self.weight_bits, signed=True,
                                    granularity='channel', channel_axis=0,
                                    observer='abs', grad=self.grad,
                                    symmetric=self.weight_bits >= 2,
                                    dynamic=True)
        return A2QQuantizer(self.init_bits, self.num_groups, grad=self.grad)

    @staticmethod
    def _quantizers(model: nn.Module) -> list:
        found = [m for m in model.modules() if isinstance(m, A2QQuantizer)]
        if not found:
            raise ValueError("'model' has no A2Q quantizer: quantize it with "
                             "quantize_model(model, A2Q(...)) first")
        return found

    def average_bits(self, model: nn.Module) -> torch.Tensor:
        r"""The memory-weighted average bit width of the node features in
        :obj:`model`'s last forward pass."""
        return a2q.average_bits(self._quantizers(model))

    def memory_penalty(self, model: nn.Module) -> torch.Tensor:
        r"""The memory penalty of :obj:`model`'s last forward pass, to add to
        the task loss (zero without :obj:`target_avg_bits`)."""
        quantizers = self._quantizers(model)
        if self.target_avg_bits is None:
            return quantizers[0].step.new_zeros(())
        return a2q.memory_penalty(quantizers, self.target_avg_bits,
                                  self.memory_weight)


#: The points A2Q quantizes: node rows, and weights.
A2Q_POINTS = ('input', 'weight', 'aggregate', 'output')
