r"""Swap the layers of a PyG model for their quantized twins.

.. code-block:: python

    from torch_geometric.nn.models import GCN
    from pyg_qgnn import quantize_model, QAT

    model = GCN(1433, 16, num_layers=2, out_channels=7)
    ...  # train as usual
    qmodel = quantize_model(model, QAT(bits=8))  # GCNConv -> QuantGCNConv
    ...  # fine-tune qmodel, then pyg_qgnn.deploy.save(qmodel, 'gcn8.safetensors')

A *scheme* (:class:`QAT`; Degree-Quant and A²Q plug in the same way) says
which quantizer stands at each quantization point of a layer; the registry
says which twin replaces which float layer.
"""
import copy
import functools
import inspect
import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Type

import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import GATConv, GCNConv, GINConv, SAGEConv
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear as PyGLinear
from torch_geometric.utils import is_sparse

from pyg_qgnn.nn import (
    QUANT_POINTS,
    QuantGATConv,
    QuantGCNConv,
    QuantGINConv,
    QuantLayer,
    QuantLinear,
    QuantSAGEConv,
)
from pyg_qgnn.quantizers import IntegerQuantizer, Quantizer, a2q
from pyg_qgnn.quantizers.a2q import A2QQuantizer
from pyg_qgnn.quantizers.degree_quant import (
    DegreeQuantizer,
    check_probabilities,
)
from pyg_qgnn.quantizers.functional import GRADS, check_bits
from pyg_qgnn.quantizers.observers import OBSERVERS
from pyg_qgnn.transforms.degree_quant_mask import (
    attach_protection_probability,
    edge_targets,
    graph_protection_probability,
)

#: Float layer class -> its quantized twin (exact class match).
QUANTIZED_LAYERS: Dict[Type[nn.Module], Type[QuantLayer]] = {}


def register_quantized_layer(float_cls: Type[nn.Module],
                             quant_cls: Type[QuantLayer]):
    r"""Makes :func:`quantize_model` replace :obj:`float_cls` layers by
    :obj:`quant_cls.from_float(layer, ...)`."""
    if not (isinstance(quant_cls, type) and issubclass(quant_cls, QuantLayer)):
        raise TypeError(f"'quant_cls' must be a QuantLayer subclass "
                        f"(got {quant_cls!r})")
    QUANTIZED_LAYERS[float_cls] = quant_cls


register_quantized_layer(nn.Linear, QuantLinear)
register_quantized_layer(PyGLinear, QuantLinear)
register_quantized_layer(GCNConv, QuantGCNConv)
register_quantized_layer(GINConv, QuantGINConv)
register_quantized_layer(SAGEConv, QuantSAGEConv)
register_quantized_layer(GATConv, QuantGATConv)


class QuantScheme:
    r"""Base class of quantization schemes: :meth:`quantizer` returns a fresh
    quantizer for one point of one layer, or :obj:`None` to keep it float."""
    def quantizer(self, point: str, layer: nn.Module) -> Optional[Quantizer]:
        raise TypeError(f"'{type(self).__name__}' must define quantizer()")

    def convert(self, layer: nn.Module) -> QuantLayer:
        r"""The quantized twin of a supported :obj:`layer`."""
        twin_cls = QUANTIZED_LAYERS[type(layer)]
        quantizers = {point: self.quantizer(point, layer)
                      for point in twin_cls.quant_points}
        return twin_cls.from_float(layer, **quantizers)

    def prepare(self, model: nn.Module):
        r"""Called by :func:`quantize_model` on the quantized model: installs
        what the scheme needs at run time (hooks that hand quantizers the
        graph). Does nothing by default."""


@dataclass
class QAT(QuantScheme):
    r"""Plain quantization-aware training (`Jacob et al., 2018
    <https://arxiv.org/abs/1712.05877>`_) at :obj:`bits` bits.

    Weights use a symmetric per-tensor range taken from their current values;
    activations (input, aggregate, ...) an asymmetric range tracked by
    :obj:`observer`.

    Args:
        bits (int, optional): Bit width in :math:`[1, 8]`. (default: :obj:`8`)
        observer (str, optional): Activation range tracking: :obj:`"abs"`,
            :obj:`"mom"` or :obj:`"per"`. The percentile range is the default
            because outliers (say row-normalized features of low-degree nodes)
            otherwise waste low bit widths: on Cora, INT4 GCN accuracy is
            81.0 with it vs. 78.1 with :obj:`"mom"`. (default: :obj:`"per"`)
        grad (str, optional): :obj:`"ste"` or :obj:`"clipped"`.
            (default: :obj:`"ste"`)
        points (Sequence[str], optional): The points quantized, among
            :obj:`"input"`, :obj:`"weight"`, :obj:`"message"`,
            :obj:`"aggregate"`, :obj:`"output"`; per-edge messages are the
            costliest. (default: :obj:`("input", "weight", "aggregate")`)
    """
    bits: int = 8
    observer: str = 'per'
    grad: str = 'ste'
    points: Sequence[str] = ('input', 'weight', 'aggregate')

    def __post_init__(self):
        check_bits(self.bits)
        if self.observer not in OBSERVERS:
            raise ValueError(f"'observer' must be one of {sorted(OBSERVERS)} "
                             f"(got {self.observer!r})")
        if self.grad not in GRADS:
            raise ValueError(f"'grad' must be one of {GRADS} "
                             f"(got {self.grad!r})")
        self.points = _check_points(self.points, QUANT_POINTS)

    def quantizer(self, point, layer):
        if point not in self.points:
            return None
        if point == 'weight':
            return IntegerQuantizer(self.bits, signed=True, observer='abs',
                                    grad=self.grad, symmetric=self.bits >= 2,
                                    dynamic=True)
        return self.activation_quantizer()

    def activation_quantizer(self) -> Quantizer:
        r"""The quantizer of an activation point (input, message, ...)."""
        return IntegerQuantizer(self.bits, signed=True, observer=self.observer,
                                grad=self.grad)


def _check_points(points: Sequence[str], allowed: Sequence[str]) -> tuple:
    unknown = set(points) - set(allowed)
    if unknown:
        raise ValueError(f"'points' must be among {tuple(allowed)} "
                         f"(got {sorted(unknown)})")
    return tuple(points)


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


@dataclass
class A2Q(QuantScheme):
    r"""`A²Q <https://arxiv.org/abs/2302.00193>`_, aggregation-aware
    mixed-precision quantization (Zhu et al., 2023): every node's features
    get a learned step size and bit width
    (:class:`~pyg_qgnn.quantizers.A2QQuantizer`), trained with the local
    gradient of the node's own quantization error, and weights a learned step
    per output channel (LSQ) at :obj:`weight_bits` bits.

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
        self.points = _check_points(self.points, A2Q_POINTS)

    def quantizer(self, point, layer):
        if point not in self.points:
            return None
        if point == 'weight':
            return IntegerQuantizer(self.weight_bits, signed=True,
                                    granularity='channel', channel_axis=0,
                                    grad='lsq')
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


def supported_layers() -> list:
    r"""Names of the float layers :func:`quantize_model` can swap."""
    return sorted({cls.__name__ for cls in QUANTIZED_LAYERS})


def quantize_model(model: nn.Module, scheme: QuantScheme,
                   inplace: bool = False, strict: bool = True) -> nn.Module:
    r"""Replaces every supported layer of :obj:`model` by its quantized twin
    under :obj:`scheme`, keeping its weights.

    Args:
        model (torch.nn.Module): A PyG layer or any model built of them
            (e.g. :class:`torch_geometric.nn.models.GCN`).
        scheme (QuantScheme): For instance :obj:`QAT(bits=8)`.
        inplace (bool, optional): Modify :obj:`model` instead of a copy.
            (default: :obj:`False`)
        strict (bool, optional): Raise on a :class:`MessagePassing` layer
            with no quantized twin, or on a model with nothing to quantize;
            otherwise leave them in float with a warning pointing at the
            caller. (default: :obj:`True`)
    """
    if not isinstance(scheme, QuantScheme):
        raise TypeError(f"'scheme' must be a QuantScheme such as QAT(bits=8) "
                        f"(got {type(scheme).__name__})")
    if not isinstance(model, nn.Module):
        raise TypeError(f"'model' must be a torch.nn.Module "
                        f"(got {type(model).__name__})")
    if not inplace:
        model = copy.deepcopy(model)
    if type(model) in QUANTIZED_LAYERS:
        model = scheme.convert(model)
        scheme.prepare(model)
        return model
    swapped, skipped = [], []
    _swap_children(model, scheme, prefix='', swapped=swapped, skipped=skipped)
    supported = ', '.join(supported_layers())
    if skipped and strict:
        path, layer = skipped[0]
        raise TypeError(f"cannot quantize layer '{path}' ({layer}): supported "
                        f"layers are {supported}; pass strict=False to keep "
                        f"it in floating point")
    for path, layer in skipped:
        # stacklevel=2: the warning points at the caller's line.
        warnings.warn(f"cannot quantize layer '{path}' ({layer}): supported "
                      f"layers are {supported}; it stays in floating point",
                      stacklevel=2)
    # A model quantized before passes through unchanged.
    if not swapped and not any(isinstance(m, QuantLayer)
                               for m in model.modules()):
        message = (f"'model' ({type(model).__name__}) has no layer that "
                   f"quantize_model can swap; supported layers are "
                   f"{supported}")
        if strict:
            raise TypeError(message)
        warnings.warn(message + '; the model is returned unchanged',
                      stacklevel=2)
    scheme.prepare(model)
    return model


def _swap_children(module: nn.Module, scheme: QuantScheme, prefix: str,
                   swapped: list, skipped: list):
    r"""Swaps supported children of :obj:`module` in place, recording the
    paths swapped and the :class:`MessagePassing` layers with no twin."""
    for name, child in module.named_children():
        path = prefix + name
        if isinstance(child, QuantLayer):
            continue
        if type(child) in QUANTIZED_LAYERS:
            twin = scheme.convert(child)
            setattr(module, name, twin)
            swapped.append(path)
            # Float layers the twin keeps (a GINConv's network) join too.
            _swap_children(twin, scheme, path + '.', swapped, skipped)
        elif isinstance(child, MessagePassing):
            skipped.append((path, type(child).__name__))
        else:
            _swap_children(child, scheme, path + '.', swapped, skipped)


@torch.no_grad()
def calibrate(model: nn.Module, *args, **kwargs) -> nn.Module:
    r"""Runs :obj:`model(*args, **kwargs)` once without gradients, the model
    in evaluation mode (no dropout) and its quantizers observing, so that
    post-training quantization gets its ranges; modes are restored after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for module in model.modules():
        if isinstance(module, Quantizer):
            module.train()
    try:
        model(*args, **kwargs)
    finally:
        for module, mode in modes.items():
            module.training = mode
    return model
