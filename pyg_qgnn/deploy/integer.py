r"""Deployed integer layers: the inference form of QAT, Degree-Quant and A²Q
models.

:func:`~pyg_qgnn.deploy.convert` replaces each trained twin by the layer
registered here. A deployed layer stores its weights as integer codes
(:class:`~pyg_qgnn.deploy.integer_codec.IntegerWeight`, packed at 4 bits
and below), its activation quantizers as frozen
:class:`~pyg_qgnn.deploy.integer_codec.IntegerCodec` ranges, and computes:

* linear transforms with an :obj:`int8` GEMM accumulating in :obj:`int32`
  (:func:`~pyg_qgnn.deploy.integer_graph.linear`);
* aggregation by gathering :obj:`int8` node codes (a quarter of the bytes
  of float32 rows), each turned into the value the trained model
  dequantizes and summed in float64 with one rounding, which the twins do
  in evaluation too, so sums on a rounding boundary of the next quantizer
  land on the same code; maxima compare the codes themselves
  (:func:`~pyg_qgnn.deploy.integer_graph.aggregate`);
* everything the trained model computes in floating point (biases, batch
  norms, activations, GAT's attention) in floating point.

Where a quantizer sits in the trained model, the deployed layer produces
the same codes; its outputs are the fake-quantized model's up to the order
of floating-point sums. GCN aggregates first and transforms after
(:math:`\hat{\mathbf{A}}(\hat{\mathbf{X}}\hat{\mathbf{W}}^{\top}) =
(\hat{\mathbf{A}}\hat{\mathbf{X}})\hat{\mathbf{W}}^{\top}`) when that
gathers fewer bytes, since its input codes are the only integers it can
aggregate.
"""
import copy
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.typing import Adj, OptTensor, PairTensor, SparseTensor
from torch_geometric.utils import is_sparse

from pyg_qgnn.deploy.convert import (
    DeployedLayer,
    convert,
    register_deployed_layer,
)
from pyg_qgnn.deploy.integer_codec import Codes, IntegerCodec, IntegerWeight
from pyg_qgnn.deploy.integer_elementwise import add_codes
from pyg_qgnn.deploy.integer_graph import (
    aggregate,
    check_edge_index,
    linear,
    spmm,
    to_csr,
)
from pyg_qgnn.nn import (
    QuantGATConv,
    QuantGCNConv,
    QuantGINConv,
    QuantLinear,
    QuantSAGEConv,
)


def _active(quantizer) -> bool:
    return quantizer is not None and getattr(quantizer, 'fake_quant_enabled',
                                             True)


def _codec(twin: nn.Module, point: str,
           required: bool = False) -> Optional[IntegerCodec]:
    quantizer = getattr(twin, f'{point}_quantizer', None)
    if not _active(quantizer):
        if required:
            raise ValueError(f"'{type(twin).__name__}' has no active "
                             f"'{point}_quantizer'; its integer form computes "
                             f"on {point} codes: quantize it with a scheme "
                             f"whose points include {point!r}")
        return None
    return IntegerCodec.from_quantizer(quantizer, f'{point}_quantizer')


def _weight(linear_twin: nn.Module) -> IntegerWeight:
    quantizer = getattr(linear_twin, 'weight_quantizer', None)
    if not _active(quantizer):
        raise ValueError(f"'{type(linear_twin).__name__}' has no active "
                         f"'weight_quantizer': there are no integer weights "
                         f"to deploy")
    return IntegerWeight.from_quantizer(linear_twin.weight.detach(),
                                        quantizer)


def _bias(module: nn.Module) -> Optional[Tensor]:
    bias = getattr(module, 'bias', None)
    return None if bias is None else bias.detach().clone()


def _apply(codec: Optional[IntegerCodec], x: Tensor) -> Tensor:
    r""":obj:`codec` on :obj:`x`, a fresh intermediate: in place."""
    return x if codec is None else codec.fake_(x)


def _pair(x: Union[Tensor, PairTensor]) -> Tuple[Tensor, Optional[Tensor]]:
    if isinstance(x, Tensor):
        return x, x
    return x[0], x[1]


def _pattern(edge_index: Adj) -> Adj:
    r""":obj:`edge_index` without the values of a :class:`SparseTensor`,
    which :class:`GINConv` and :class:`SAGEConv` drop (they sum the
    neighbours unweighted)."""
    if isinstance(edge_index, SparseTensor):
        return edge_index.set_value(None, layout=None)
    return edge_index


def _encode_graph(layer: nn.Module, x: Union[Tensor, PairTensor],
                  edge_index: Adj, size: Optional[Tuple[int, int]],
                  with_root: bool = True):
    r"""What a deployed GIN or SAGE layer aggregates: the source codes of
    :math:`Q_{in}` (re-encoded by :math:`Q_{msg}` if any), the graph as
    CSR (unweighted, as PyG's layers read it), and the target codes for the
    root term (:obj:`None` without targets or :obj:`with_root`)."""
    x_src, x_dst = _pair(x)
    codes = layer.input_quantizer.encode(x_src)
    num_dst = x_dst.size(0) if x_dst is not None else (
        size[1] if size is not None else x_src.size(0))
    csr = to_csr(_pattern(edge_index), (x_src.size(0), num_dst),
                 flow=layer.flow)
    messages = codes if layer.message_quantizer is None else \
        layer.message_quantizer.encode(codes.dequantize())
    root = None
    if with_root and x_dst is not None:
        root = codes if x_dst is x_src else layer.input_quantizer.encode(x_dst)
    return messages, csr, root


def _bits_repr(codecs: dict, weights: dict) -> str:
    parts = [f'{name}_bits={w.bits}' for name, w in weights.items()
             if w is not None]
    for name, codec in codecs.items():
        if codec is not None:
            parts.append(f'{name}={codec.extra_repr()}')
    return ', '.join(parts)


class DeployedQuantLinear(DeployedLayer):
    r"""The deployed :class:`~pyg_qgnn.nn.QuantLinear`:
    :math:`Q_{out}(\hat{\mathbf{x}}\hat{\mathbf{W}}^{\top} + \mathbf{b})`
    with an :obj:`int8` GEMM when the input is quantized (by the layer's
    own :math:`Q_{in}`, or handed over as :class:`Codes`), else a float GEMM
    with the dequantized weights. The bias stays in float32."""
    def __init__(self, weight: IntegerWeight, bias: Optional[Tensor],
                 input_codec: Optional[IntegerCodec] = None,
                 output_codec: Optional[IntegerCodec] = None):
        super().__init__()
        self.weight = weight
        self.register_buffer('bias', bias)
        self.input_quantizer = input_codec
        self.output_quantizer = output_codec

    @classmethod
    def from_trained(cls, twin: QuantLinear) -> 'DeployedQuantLinear':
        return cls(_weight(twin), _bias(twin), _codec(twin, 'input'),
                   _codec(twin, 'output'))

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @torch.no_grad()
    def forward(self, x: Union[Tensor, Codes]) -> Tensor:
        if (isinstance(x, Tensor) and x.dim() != 2
                and self.input_quantizer is not None
                and self.input_quantizer.kind == 'affine'):
            # Codes are rows: (*, F_in) -> (N, F_in), and back.
            out = self(x.reshape(-1, x.size(-1)))
            return out.view(*x.shape[:-1], out.size(-1))
        if isinstance(x, Tensor) and self.input_quantizer is not None:
            x = self.input_quantizer.encode(x)
        if isinstance(x, Codes):
            out = linear(x, self.weight, self.bias)
        else:
            out = F.linear(x, self.weight.dequantize(), self.bias)
        return _apply(self.output_quantizer, out)

    def __repr__(self) -> str:
        extra = _bits_repr(dict(input=self.input_quantizer,
                                output=self.output_quantizer),
                           dict(weight=self.weight))
        return (f'{type(self).__name__}({self.in_channels}, '
                f'{self.out_channels}, {extra}, float: bias)')


class DeployedQuantGCNConv(DeployedLayer):
    r"""The deployed :class:`~pyg_qgnn.nn.QuantGCNConv`:

    .. math::
        \mathbf{x}^{\prime} = Q_{out}\big(Q_{agg}(\hat{\mathbf{A}}\,
        \hat{\mathbf{X}}\,\hat{\mathbf{W}}^{\top}) + \mathbf{b}\big)

    with :math:`\hat{\mathbf{X}}` the :obj:`int8` codes of
    :math:`Q_{in}`. It aggregates the codes first (gathering :obj:`int8`
    rows, weighted by the float normalization) and applies the weights
    after when :math:`F_{in} < 4 F_{out}`, else it multiplies the codes by
    the integer weights first (:obj:`int8` GEMM) and aggregates the float
    products. The normalization is recomputed per call, or cached with
    :obj:`cached=True` as in :class:`~torch_geometric.nn.conv.GCNConv`.
    Per-edge message quantization has no integer form: a twin with an active
    :obj:`message_quantizer` is refused.
    """
    def __init__(self, weight: IntegerWeight, bias: Optional[Tensor],
                 input_codec: IntegerCodec,
                 aggregate_codec: Optional[IntegerCodec] = None,
                 output_codec: Optional[IntegerCodec] = None,
                 improved: bool = False, cached: bool = False,
                 add_self_loops: bool = True, normalize: bool = True,
                 flow: str = 'source_to_target'):
        super().__init__()
        self.weight = weight
        self.register_buffer('bias', bias)
        self.input_quantizer = input_codec
        self.aggregate_quantizer = aggregate_codec
        self.output_quantizer = output_codec
        self.improved, self.cached = improved, cached
        self.add_self_loops, self.normalize = add_self_loops, normalize
        self.flow = flow
        self._cached_graph = None

    @classmethod
    def from_trained(cls, twin: QuantGCNConv) -> 'DeployedQuantGCNConv':
        if _active(twin.message_quantizer):
            raise ValueError("'QuantGCNConv' quantizes each message after "
                             "its normalization, which has no integer form; "
                             "train it without the 'message' point")
        if twin.aggr != 'add':
            raise ValueError(f"'QuantGCNConv' with aggr={twin.aggr!r} has no "
                             f"integer form; expected 'add'")
        add_self_loops = twin.add_self_loops
        return cls(_weight(twin.lin), _bias(twin),
                   _codec(twin, 'input', required=True),
                   _codec(twin, 'aggregate'), _codec(twin, 'output'),
                   twin.improved, twin.cached,
                   True if add_self_loops is None else add_self_loops,
                   twin.normalize, twin.flow)

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def _graph(self, edge_index: Adj, edge_weight: OptTensor, num_nodes: int):
        if self.cached and self._cached_graph is not None:
            return self._cached_graph
        if not is_sparse(edge_index):  # gcn_norm's errors name no argument
            check_edge_index(edge_index, (num_nodes, num_nodes), self.flow)
        if self.normalize:
            normalized = gcn_norm(edge_index, edge_weight, num_nodes,
                                  self.improved, self.add_self_loops,
                                  self.flow, torch.float32)
            if isinstance(normalized, tuple):
                edge_index, edge_weight = normalized
            else:
                edge_index, edge_weight = normalized, None
        csr = to_csr(edge_index, (num_nodes, num_nodes), edge_weight,
                     self.flow)
        if self.cached:
            self._cached_graph = csr
        return csr

    @torch.no_grad()
    def forward(self, x: Tensor, edge_index: Adj,
                edge_weight: OptTensor = None) -> Tensor:
        csr = self._graph(edge_index, edge_weight, x.size(0))
        codes = self.input_quantizer.encode(x)
        if self.in_channels < 4 * self.out_channels:
            out = F.linear(aggregate(codes, csr), self.weight.dequantize())
        else:
            h = linear(codes, self.weight)
            out = spmm(csr, h)
        out = _apply(self.aggregate_quantizer, out)
        if self.bias is not None:
            out += self.bias
        return _apply(self.output_quantizer, out)

    def __repr__(self) -> str:
        extra = _bits_repr(dict(input=self.input_quantizer,
                                aggregate=self.aggregate_quantizer,
                                output=self.output_quantizer),
                           dict(weight=self.weight))
        return (f'{type(self).__name__}({self.in_channels}, '
                f'{self.out_channels}, {extra}, float: normalization, bias)')


class DeployedQuantGINConv(DeployedLayer):
    r"""The deployed :class:`~pyg_qgnn.nn.QuantGINConv`:

    .. math::
        \mathbf{x}^{\prime}_i = Q_{out}\Big(h_{\mathbf{\Theta}}\big(
        (1 + \epsilon)\,\hat{\mathbf{x}}_i + Q_{agg}\big(\textstyle
        \sum_{j} \hat{\mathbf{x}}_j\big)\big)\Big)

    The neighbour sum gathers the :obj:`int8` codes of :math:`Q_{in}` and
    adds their values in float64, as the twin does in evaluation, and
    :math:`h_{\mathbf{\Theta}}` is the trained MLP with its quantized
    linear layers deployed (:class:`DeployedQuantLinear`)."""
    def __init__(self, nn_module: nn.Module, eps: float,
                 input_codec: IntegerCodec,
                 message_codec: Optional[IntegerCodec] = None,
                 aggregate_codec: Optional[IntegerCodec] = None,
                 output_codec: Optional[IntegerCodec] = None,
                 flow: str = 'source_to_target'):
        super().__init__()
        self.nn = nn_module.requires_grad_(False)  # float layers (norms) too
        self.register_buffer('eps', torch.tensor(float(eps)))
        self.input_quantizer = input_codec
        self.message_quantizer = message_codec
        self.aggregate_quantizer = aggregate_codec
        self.output_quantizer = output_codec
        self.flow = flow

    @classmethod
    def from_trained(cls, twin: QuantGINConv) -> 'DeployedQuantGINConv':
        if not (isinstance(twin.aggr, str) and twin.aggr in ('add', 'sum')):
            raise ValueError(f"'QuantGINConv' with aggr={twin.aggr!r} has "
                             f"no integer form; expected 'add' or 'sum'")
        return cls(convert(twin.nn), float(twin.eps),
                   _codec(twin, 'input', required=True),
                   _codec(twin, 'message'), _codec(twin, 'aggregate'),
                   _codec(twin, 'output'), twin.flow)

    @torch.no_grad()
    def forward(self, x: Union[Tensor, PairTensor], edge_index: Adj,
                size: Optional[Tuple[int, int]] = None) -> Tensor:
        messages, csr, root = _encode_graph(self, x, edge_index, size)
        out = _apply(self.aggregate_quantizer, aggregate(messages, csr))
        if root is not None:
            add_codes(out, root.values, root.zero_point, root.step,
                      float(1 + self.eps))
        return _apply(self.output_quantizer, self.nn(out))

    def __repr__(self) -> str:
        extra = _bits_repr(dict(input=self.input_quantizer,
                                message=self.message_quantizer,
                                aggregate=self.aggregate_quantizer,
                                output=self.output_quantizer), {})
        return (f'{type(self).__name__}(nn={self.nn}, {extra}, '
                f'float: eps)')


class DeployedQuantSAGEConv(DeployedLayer):
    r"""The deployed :class:`~pyg_qgnn.nn.QuantSAGEConv`:

    .. math::
        \mathbf{x}^{\prime}_i = Q_{out}\big(\hat{\mathbf{W}}_1\,Q_{agg}
        (\mathrm{aggr}_{j} \hat{\mathbf{x}}_j) + \mathbf{b} +
        \hat{\mathbf{W}}_2\,\hat{\mathbf{x}}_i\big)

    The :obj:`"mean"`/:obj:`"sum"` aggregation gathers :obj:`int8` codes
    and adds their values in float64, as the twin does in evaluation (and
    :obj:`"max"` compares the codes); both products are
    :obj:`int8` GEMMs where their input is quantized (:math:`Q_{agg}` for
    :math:`\hat{\mathbf{W}}_1`)."""
    AGGREGATIONS = {'mean': 'mean', 'sum': 'sum', 'add': 'sum', 'max': 'max'}

    def __init__(self, lin_l: DeployedQuantLinear,
                 lin_r: Optional[DeployedQuantLinear],
                 input_codec: IntegerCodec, aggr: str = 'mean',
                 normalize: bool = False,
                 message_codec: Optional[IntegerCodec] = None,
                 aggregate_codec: Optional[IntegerCodec] = None,
                 output_codec: Optional[IntegerCodec] = None,
                 flow: str = 'source_to_target'):
        super().__init__()
        self.lin_l, self.lin_r = lin_l, lin_r
        self.input_quantizer = input_codec
        self.message_quantizer = message_codec
        self.aggregate_quantizer = aggregate_codec
        self.output_quantizer = output_codec
        self.aggr, self.normalize, self.flow = aggr, normalize, flow

    @classmethod
    def from_trained(cls, twin: QuantSAGEConv) -> 'DeployedQuantSAGEConv':
        aggr = cls.AGGREGATIONS.get(twin.aggr if isinstance(twin.aggr, str)
                                    else None)
        if aggr is None:
            raise ValueError(f"'QuantSAGEConv' with aggr={twin.aggr!r} has "
                             f"no integer form; expected one of "
                             f"{sorted(cls.AGGREGATIONS)}")
        if twin.project:
            raise ValueError("'QuantSAGEConv' with project=True has no "
                             "integer form (its projection is float)")
        lin_r = (DeployedQuantLinear.from_trained(twin.lin_r)
                 if twin.root_weight else None)
        return cls(DeployedQuantLinear.from_trained(twin.lin_l), lin_r,
                   _codec(twin, 'input', required=True), aggr,
                   twin.normalize, _codec(twin, 'message'),
                   _codec(twin, 'aggregate'), _codec(twin, 'output'),
                   twin.flow)

    @torch.no_grad()
    def forward(self, x: Union[Tensor, PairTensor], edge_index: Adj,
                size: Optional[Tuple[int, int]] = None) -> Tensor:
        messages, csr, root = _encode_graph(self, x, edge_index, size,
                                            self.lin_r is not None)
        out = aggregate(messages, csr, self.aggr)
        if self.aggregate_quantizer is not None:
            out = self.aggregate_quantizer.encode(out)
        out = self.lin_l(out)
        if root is not None:
            out += self.lin_r(root)
        if self.normalize:
            out = F.normalize(out, p=2., dim=-1)
        return _apply(self.output_quantizer, out)

    def __repr__(self) -> str:
        extra = _bits_repr(dict(input=self.input_quantizer,
                                message=self.message_quantizer,
                                aggregate=self.aggregate_quantizer,
                                output=self.output_quantizer),
                           dict(weight=self.lin_l.weight))
        return (f'{type(self).__name__}({self.lin_l.in_channels}, '
                f'{self.lin_l.out_channels}, aggr={self.aggr!r}, {extra}, '
                f'float: bias)')


class DeployedQuantGATConv(DeployedLayer):
    r"""The deployed :class:`~pyg_qgnn.nn.QuantGATConv`: the trained layer
    with its projections as :class:`DeployedQuantLinear` (:obj:`int8` codes
    of :math:`Q_{in}` times :obj:`int8` weights) and its other quantizers
    frozen (:class:`IntegerCodec`); the attention coefficients, their
    softmax and the weighted aggregation stay in float32, as they are
    trained. Called like :class:`~torch_geometric.nn.conv.GATConv`."""
    def __init__(self, conv: QuantGATConv):
        super().__init__()
        self.conv = conv.requires_grad_(False)  # attention vectors, bias

    @classmethod
    def from_trained(cls, twin: QuantGATConv) -> 'DeployedQuantGATConv':
        conv = copy.deepcopy(twin)
        input_codec = _codec(twin, 'input')
        for name in ('lin', 'lin_src', 'lin_dst', 'lin_edge', 'res'):
            child = getattr(conv, name, None)
            if isinstance(child, QuantLinear):
                deployed = DeployedQuantLinear.from_trained(child)
                if name != 'lin_edge' and input_codec is not None:
                    # The projections read x: they quantize it themselves.
                    deployed.input_quantizer = copy.deepcopy(input_codec)
                setattr(conv, name, deployed)
        conv._modules['input_quantizer'] = None
        for point in ('attention', 'message', 'aggregate', 'output'):
            conv._modules[f'{point}_quantizer'] = _codec(twin, point)
        return cls(conv)

    @torch.no_grad()
    def forward(self, *args, **kwargs):
        return self.conv(*args, **kwargs)

    def __repr__(self) -> str:
        lin = self.conv.lin if self.conv.lin is not None else \
            self.conv.lin_src
        return (f'{type(self).__name__}({self.conv.in_channels}, '
                f'{self.conv.out_channels}, heads={self.conv.heads}, '
                f'weight_bits={lin.weight.bits}, float: attention, bias)')


register_deployed_layer(QuantLinear, DeployedQuantLinear)
register_deployed_layer(QuantGCNConv, DeployedQuantGCNConv)
register_deployed_layer(QuantGINConv, DeployedQuantGINConv)
register_deployed_layer(QuantSAGEConv, DeployedQuantSAGEConv)
register_deployed_layer(QuantGATConv, DeployedQuantGATConv)
