r"""Degree-Quant as a scheme: protective masks drawn per training step from
the graph each message-passing layer sees, handed to its quantizers by
hooks."""
import functools
import inspect
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.utils import is_sparse

from pyg_qgnn.quantizers import Quantizer
from pyg_qgnn.quantizers.degree_quant import (
    DegreeQuantizer,
    check_probabilities,
)
from pyg_qgnn.schemes.qat import QAT
from pyg_qgnn.transforms.degree_quant_mask import (
    attach_protection_probability,
    edge_targets,
    graph_protection_probability,
)


@dataclass
class DegreeQuant(QAT):
    r"""`Degree-Quant <https://arxiv.org/abs/2008.05000>`_ (Tailor et al.,
    2021): quantization-aware training in which, at every training step,
    each node is *protected* (kept in floating point at the quantization
    points that act on nodes) with a probability that rises with its
    in-degree,

    .. math::
        p_i = p_{min} + (p_{max} - p_{min})\,
        \frac{|\{j : d_j \le d_i\}|}{n},

    so that the large aggregates of high in-degree nodes, which carry the
    largest quantization errors, neither pass the quantizer nor widen its
    range. Masks are drawn anew for each layer and forward pass; messages are
    protected with their target node; weights are never protected, and nor
    is a layer outside message passing (a classifier on pooled graph
    embeddings has no graph). In evaluation every node is quantized, exactly
    as with :class:`QAT`.

    The probabilities come from the graph each layer sees, computed once per
    graph object and cached by its identity, or from
    :class:`~pyg_qgnn.transforms.DegreeQuantMask` (attached to the data in
    advance; used when the model is called with the data object itself, or
    with its :obj:`edge_index` tensor). The range observers reuse
    :class:`QAT`'s: the percentile is estimated on a subsample, not on a full
    sort of every activation as in the reference code.

    .. code-block:: python

        scheme = DegreeQuant(bits=4, p_min=0.0, p_max=0.1, observer='per',
                             grad='clipped')  # "gc-per" of the study
        qmodel = quantize_model(model, scheme)
        loss = F.cross_entropy(qmodel(x, edge_index)[mask], y[mask])

    Args:
        bits (int, optional): Bit width in :math:`[1, 8]`. (default: :obj:`8`)
        p_min (float, optional): Protection probability of the lowest
            in-degree, in :math:`[0, 1]`. (default: :obj:`0.0`)
        p_max (float, optional): Protection probability of the highest
            in-degree, in :math:`[p_{min}, 1]`. (default: :obj:`0.1`)
        observer (str, optional): :obj:`"abs"`, :obj:`"mom"` or :obj:`"per"`,
            see :class:`QAT`. (default: :obj:`"per"`)
        grad (str, optional): :obj:`"ste"` or :obj:`"clipped"` (the study's
            "gc"). (default: :obj:`"ste"`)
        points (Sequence[str], optional): See :class:`QAT`.
            (default: :obj:`("input", "weight", "aggregate")`)
    """
    p_min: float = 0.0
    p_max: float = 0.1

    def __init__(self, bits: int = 8, p_min: float = 0.0, p_max: float = 0.1,
                 observer: str = 'per', grad: str = 'ste',
                 points: Sequence[str] = ('input', 'weight', 'aggregate')):
        # Written out to keep the order (bits, p_min, p_max, ...) of the
        # paper's settings rather than the dataclass order of QAT's fields.
        self.bits, self.p_min, self.p_max = bits, p_min, p_max
        self.observer, self.grad, self.points = observer, grad, points
        self.__post_init__()

    def __post_init__(self):
        super().__post_init__()
        check_probabilities(self.p_min, self.p_max)

    def activation_quantizer(self) -> Quantizer:
        return DegreeQuantizer(self.bits, signed=True, observer=self.observer,
                               grad=self.grad)

    def prepare(self, model: nn.Module):
        for module in model.modules():
            if not isinstance(module, MessagePassing) or not any(
                    isinstance(m, DegreeQuantizer) for m in module.modules()):
                continue
            hooks = getattr(module, '_degree_quant_hooks', None)
            if hooks is None:
                hooks = _DegreeQuantHooks(self.p_min, self.p_max)
                module._degree_quant_hooks = hooks
                module.register_forward_pre_hook(hooks.before_forward,
                                                 with_kwargs=True)
                module.register_forward_hook(hooks.after_forward)
                module.register_propagate_forward_pre_hook(
                    hooks.before_propagate)
            hooks.p_min, hooks.p_max = self.p_min, self.p_max
        if _attach_data_probabilities not in model._forward_pre_hooks.values():
            model.register_forward_pre_hook(_attach_data_probabilities,
                                            with_kwargs=True)


class _DegreeQuantHooks:
    r"""The run-time side of :class:`DegreeQuant` in one message-passing
    layer: before each training forward pass it draws the protected nodes and
    hands them to the layer's :class:`DegreeQuantizer` modules (those of a
    :class:`QuantLinear` inside it too); the message quantizer gets them per
    edge, by target node, once :meth:`propagate` knows the edges."""
    def __init__(self, p_min: float, p_max: float):
        self.p_min, self.p_max = p_min, p_max
        self.node_mask = None

    @staticmethod
    def _quantizers(layer: nn.Module):
        message = {id(m.message_quantizer) for m in layer.modules()
                   if isinstance(m, MessagePassing)
                   and getattr(m, 'message_quantizer', None) is not None}
        found = [m for m in layer.modules() if isinstance(m, DegreeQuantizer)]
        return [m for m in found if id(m) not in message], found

    def before_forward(self, layer, args, kwargs):
        self.node_mask = None
        if not layer.training:
            return
        x, edge_index = _graph_arguments(layer, args, kwargs)
        if edge_index is None:
            return
        prob = graph_protection_probability(
            edge_index, _num_targets(layer, x, edge_index), self.p_min,
            self.p_max, getattr(layer, 'flow', 'source_to_target'))
        self.node_mask = torch.bernoulli(prob).bool()
        for quantizer in self._quantizers(layer)[0]:
            quantizer.protect(self.node_mask)

    def before_propagate(self, layer, inputs):
        quantizer = getattr(layer, 'message_quantizer', None)
        if not isinstance(quantizer, DegreeQuantizer):
            return
        mask = None
        if self.node_mask is not None:
            targets = edge_targets(inputs[0], layer.flow)
            mask = self.node_mask[targets]
        quantizer.protect(mask)

    def after_forward(self, layer, args, output):
        self.node_mask = None
        for quantizer in self._quantizers(layer)[1]:
            quantizer.protect(None)


@functools.lru_cache(maxsize=None)
def _forward_signature(cls: type) -> inspect.Signature:
    return inspect.signature(cls.forward)


def _graph_arguments(layer: nn.Module, args: tuple, kwargs: dict):
    r"""The :obj:`x` and :obj:`edge_index` a layer is called with."""
    try:
        bound = _forward_signature(type(layer)).bind(layer, *args, **kwargs)
    except TypeError:
        return None, None
    return bound.arguments.get('x'), bound.arguments.get('edge_index')


def _num_targets(layer: nn.Module, x, edge_index) -> Optional[int]:
    if is_sparse(edge_index):
        return edge_index.size(0)
    if isinstance(x, (tuple, list)):  # bipartite: (source, target) features
        x = x[1]
    if isinstance(x, torch.Tensor) and x.dim() > 0:
        return x.size(getattr(layer, 'node_dim', 0))
    return None  # inferred from the largest target index


def _attach_data_probabilities(model, args, kwargs):
    r"""Hands the probabilities :class:`DegreeQuantMask` attached to a data
    object the model is called with to the layers that see its graph."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, Data) and 'degree_quant_prob' in value:
            graph = value.adj_t if 'adj_t' in value else value.edge_index
            attach_protection_probability(graph, value.degree_quant_prob)
