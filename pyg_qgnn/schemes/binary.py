r"""Binarization as a scheme: :obj:`quantize_model(model, Binary())` swaps
the layers of a PyG model for the binary twins of `Bahri et al., 2021
<https://arxiv.org/abs/2012.15823>`_, keeping the trained weights as their
latent real weights, so that a float model is binarized in one call and
fine-tuned.

.. code-block:: python

    from torch_geometric.nn.models import GraphSAGE
    from pyg_qgnn import Binary, quantize_model
    from pyg_qgnn.quantizers import register_latent_weight_clipping

    model = GraphSAGE(100, 256, num_layers=3, out_channels=47)
    ...  # train, or load a trained float model
    binary = quantize_model(model, Binary())  # SAGEConv -> BinSAGEConv
    optimizer = torch.optim.Adam(binary.parameters(), lr=1e-3)
    register_latent_weight_clipping(optimizer, binary)
    ...  # fine-tune, then pyg_qgnn.deploy.convert(binary.eval())
"""
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Type

import torch
from torch import nn
from torch_geometric.nn.conv import DynamicEdgeConv, EdgeConv, SAGEConv
from torch_geometric.nn.dense.linear import Linear as PyGLinear

from pyg_qgnn.nn.conv.bin_edge_conv import BinEdgeConv
from pyg_qgnn.nn.conv.bin_sage_conv import BinSAGEConv
from pyg_qgnn.nn.conv.dynamic_bin_edge_conv import DynamicBinEdgeConv
from pyg_qgnn.nn.dense.bin_linear import ACTIVATIONS, BinLinear
from pyg_qgnn.nn.dense.quant_linear import QuantLinear
from pyg_qgnn.nn.quant_layer import QuantLayer
from pyg_qgnn.quantizers import Quantizer, SignQuantizer
from pyg_qgnn.schemes.base import QuantScheme

#: ``build(float_layer, scheme) -> binary twin``.
Builder = Callable[[nn.Module, 'Binary'], nn.Module]

#: Float layer class -> (its binary twin class, the builder) (exact match).
BINARY_LAYERS: Dict[Type[nn.Module], Tuple[Type[QuantLayer], Builder]] = {}

#: Marks the twins built by one quantize_model() call until prepare().
_NEW = '_binary_scheme_new'


def register_binary_layer(float_cls: Type[nn.Module],
                          binary_cls: Type[QuantLayer],
                          build: Optional[Builder] = None):
    r"""Makes :obj:`quantize_model(model, Binary())` replace
    :obj:`float_cls` layers by :obj:`build(layer, scheme)`, by default
    :obj:`binary_cls.from_float(layer, **quantizers)` with the scheme's
    quantizer at each of :obj:`binary_cls.quant_points`."""
    if not (isinstance(binary_cls, type) and issubclass(binary_cls,
                                                        QuantLayer)):
        raise TypeError(f"'binary_cls' must be a QuantLayer subclass "
                        f"(got {binary_cls!r})")
    if build is not None and not callable(build):
        raise TypeError(f"'build' must be callable or None (got {build!r})")
    BINARY_LAYERS[float_cls] = (binary_cls, build or _from_float(binary_cls))


@dataclass
class Binary(QuantScheme):
    r"""Binary weights and activations (`Bahri et al., 2021
    <https://arxiv.org/abs/2012.15823>`_): every :class:`SAGEConv`,
    :class:`EdgeConv`, :class:`DynamicEdgeConv` and linear layer becomes its
    XNOR-Net++ twin (:class:`~pyg_qgnn.nn.BinSAGEConv`,
    :class:`~pyg_qgnn.nn.BinEdgeConv`,
    :class:`~pyg_qgnn.nn.DynamicBinEdgeConv`,
    :class:`~pyg_qgnn.nn.BinLinear`): batch normalization and sign of the
    input, sign of the weight with the clipped straight-through gradient,
    and a learned channel-wise rescaling :math:`\Gamma` (starting at one).
    The float weights (and biases) become the latent real weights;
    train with :func:`~pyg_qgnn.quantizers.register_latent_weight_clipping`.

    An :class:`EdgeConv`'s network must hold one linear layer, the
    :math:`\mathbf{\Theta}` of Eq. 12, which the block's weight takes over;
    the block replaces whatever else the network held (say a batch norm and
    LeakyReLU after the linear layer).

    The first layer (in the order the model registers its layers, the order
    data flows through PyG's models) keeps its input real by default: it
    sees the raw features, whose sign would discard what the network has
    not yet learnt to encode, as the paper's models and code do for
    coordinates and OGB features. The last layer's weights are binary by
    default, as in the paper's GraphSAGE ("all three layers have binary
    weights"); its DGCNN keeps a real last layer instead
    (:obj:`keep_last_weight_real=True`), which for a GraphSAGE of 256
    hidden channels costs most of the binary model's bytes.

    Args:
        keep_first_input_real (bool, optional): No sign on the first
            layer's input. (default: :obj:`True`)
        keep_last_weight_real (bool, optional): No sign on the last layer's
            weights. (default: :obj:`False`)
        batch_norm (bool, optional): Batch normalization before each input
            sign (Eq. 12, 14). (default: :obj:`True`)
        activation (str, optional): :math:`\sigma` inside each twin:
            :obj:`"prelu"` (Eq. 12, 15), :obj:`"relu"` or :obj:`None`, so
            that the model's own activations between layers are the only
            ones, as in the paper's OGB-Products model.
            (default: :obj:`None`)
    """
    keep_first_input_real: bool = True
    keep_last_weight_real: bool = False
    batch_norm: bool = True
    activation: Optional[str] = None

    def __post_init__(self):
        for name in ('keep_first_input_real', 'keep_last_weight_real',
                     'batch_norm'):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"'{name}' must be a bool "
                                f"(got {getattr(self, name)!r})")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"'activation' must be one of {ACTIVATIONS} "
                             f"(got {self.activation!r})")

    def quantizer(self, point: str, layer: nn.Module) -> Optional[Quantizer]:
        return SignQuantizer() if point in ('input', 'weight') else None

    def twin_class(self, float_cls: type) -> Optional[type]:
        entry = BINARY_LAYERS.get(float_cls)
        return None if entry is None else entry[0]

    def supported_layers(self) -> list:
        return sorted({cls.__name__ for cls in BINARY_LAYERS})

    def convert(self, layer: nn.Module) -> QuantLayer:
        twin = BINARY_LAYERS[type(layer)][1](layer, self)
        setattr(twin, _NEW, True)
        return twin

    def prepare(self, model: nn.Module):
        r"""Keeps the first new twin's input and, if asked, the last one's
        weights real."""
        # The twins convert() built for this call, in model order (unmarked).
        new = [m for m in model.modules() if m.__dict__.pop(_NEW, False)]
        if new and self.keep_first_input_real:
            _clear_slots(new[0], 'input_quantizer')
        if new and self.keep_last_weight_real:
            _clear_slots(new[-1], 'weight_quantizer')


def _clear_slots(twin: nn.Module, slot: str):
    r"""Removes the quantizers :obj:`slot` of :obj:`twin` and of the
    sub-layers that hold them (a conv's linear layers, an edge block)."""
    for module in twin.modules():
        if slot in module._modules:
            setattr(module, slot, None)


def _from_float(binary_cls: Type[QuantLayer]) -> Builder:
    def build(layer: nn.Module, scheme: Binary) -> nn.Module:
        return binary_cls.from_float(layer, **{
            point: scheme.quantizer(point, layer)
            for point in binary_cls.quant_points})
    return build


@torch.no_grad()
def _load_linear(block: nn.Module, linear: nn.Module) -> nn.Module:
    r"""Copies :obj:`linear`'s weight and bias into :obj:`block`."""
    block.weight.copy_(linear.weight)
    if block.bias is not None and linear.bias is not None:
        block.bias.copy_(linear.bias)
    return block


def _placed(twin: nn.Module, layer: nn.Module) -> nn.Module:
    params = list(layer.parameters()) + list(layer.buffers())
    if params:
        twin = twin.to(params[0].device)
    return twin.train(layer.training)


def _bin_sage_conv(layer: SAGEConv, scheme: Binary) -> BinSAGEConv:
    return BinSAGEConv.from_float(layer, batch_norm=scheme.batch_norm,
                                  activation=scheme.activation)


def _bin_linear(layer: nn.Module, scheme: Binary) -> BinLinear:
    kwargs = QuantLinear.float_kwargs(layer)
    if kwargs['in_channels'] < 1:
        raise ValueError("cannot binarize a lazy linear layer "
                         "(in_channels=-1): run the model once first")
    twin = BinLinear(kwargs['in_channels'], kwargs['out_channels'],
                     kwargs['bias'], batch_norm=scheme.batch_norm,
                     activation=scheme.activation)
    return _placed(_load_linear(twin, layer), layer)


def _edge_linear(layer: EdgeConv) -> nn.Module:
    r"""The one linear layer :math:`\mathbf{\Theta}` of an edge network."""
    found = [m for m in layer.nn.modules()
             if isinstance(m, (nn.Linear, PyGLinear))]
    if len(found) != 1:
        raise TypeError(f"cannot binarize {type(layer).__name__}: its 'nn' "
                        f"holds {len(found)} linear layers; Binary() maps an "
                        f"edge network with exactly one (the Theta of "
                        f"Eq. 12) to an XNOR-Net++ block")
    linear = found[0]
    width = QuantLinear.float_kwargs(linear)['in_channels']
    if width < 2 or width % 2:
        raise ValueError(f"cannot binarize {type(layer).__name__}: its linear "
                         f"layer takes {width} features; expected "
                         f"2 * in_channels for [x_i || x_j - x_i]")
    return linear


def _bin_edge_conv(layer: EdgeConv, scheme: Binary) -> BinEdgeConv:
    linear = _edge_linear(layer)
    kwargs = QuantLinear.float_kwargs(linear)
    extra = dict(k=layer.k) if isinstance(layer, DynamicEdgeConv) else {}
    cls = DynamicBinEdgeConv if extra else BinEdgeConv
    twin = cls(kwargs['in_channels'] // 2, kwargs['out_channels'],
               aggr=layer.aggr, bias=kwargs['bias'],
               activation=scheme.activation, **extra)
    if not scheme.batch_norm:
        twin.nn.norm = None
    _load_linear(twin.nn, linear)
    return _placed(twin, layer)


register_binary_layer(SAGEConv, BinSAGEConv, _bin_sage_conv)
register_binary_layer(EdgeConv, BinEdgeConv, _bin_edge_conv)
register_binary_layer(DynamicEdgeConv, DynamicBinEdgeConv, _bin_edge_conv)
register_binary_layer(nn.Linear, BinLinear, _bin_linear)
register_binary_layer(PyGLinear, BinLinear, _bin_linear)
