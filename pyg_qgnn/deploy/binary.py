r"""Deployed forms of the binary layers of `Bahri et al., 2021
<https://arxiv.org/abs/2012.15823>`_: binary weights stored packed (1 bit
each), binary activations turned into :obj:`int8` codes or packed words, and
the binary products computed exactly in integers
(:func:`~pyg_qgnn.deploy.binary_ops.binary_matmul`, XOR edge features,
Hamming kNN). Everything else the trained layer learned (batch
normalization, the rescaling :math:`\Gamma`, PReLU slopes, biases, a real
last layer) stays in floating point and is named by :obj:`__repr__`.

A deployed layer computes what its trained twin computes in evaluation
mode, bit for bit: binary products are exact integers on both sides, and
every floating-point step runs the same operation on the same values (or,
for a maximum over edges, a monotone map applied after the maximum rather
than before it, which rounding cannot reorder).
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.conv import EdgeConv
from torch_geometric.typing import Adj, OptTensor, PairTensor

from pyg_qgnn.deploy.backend import backend
from pyg_qgnn.deploy.binary_edge import (
    largest_by_target,
    threshold_products,
    twin_knn_graph,
)
from pyg_qgnn.deploy.binary_ops import (
    check_finite_features,
    matmul_codes,
    pack_codes,
    sign_codes,
    sign_thresholds,
    xor_edge_features,
)
from pyg_qgnn.deploy.convert import DeployedLayer, register_deployed_layer
from pyg_qgnn.deploy.knn import hamming_knn
from pyg_qgnn.nn.conv.bin_edge_conv import BinEdgeConv
from pyg_qgnn.nn.conv.dynamic_bin_edge_conv import DynamicBinEdgeConv
from pyg_qgnn.nn.conv.dynamic_xor_edge_conv import DynamicXorEdgeConv
from pyg_qgnn.nn.conv.xor_edge_conv import XorEdgeConv
from pyg_qgnn.nn.dense.bin_linear import ACTIVATIONS, BinLinear
from pyg_qgnn.quantizers import Quantizer
from pyg_qgnn.quantizers.binary import (
    BALANCES,
    LearnedRescale,
    SignQuantizer,
    balance,
    unpack_signs,
)

#: Rows per block of a large binary input of :class:`DeployedBinLinear`:
#: smaller intermediates than fresh large tensors, whose page faults cost
#: more than their arithmetic (one thread, 16384 x 512 -> 1024: 1.25x
#: faster), yet few blocks (each operation on a loaded machine may wait for
#: its OpenMP threads).
ROW_BLOCK = 4096


class Binarize(nn.Module):
    r"""The sign of a trained :class:`~pyg_qgnn.quantizers.SignQuantizer`
    at inference: :math:`\mathrm{sign}(b(x))` (:math:`+1` for
    :math:`x \ge 0`) after its balance function :math:`b`, if any; no
    straight-through gradient, no relaxation.

    Args:
        balance (str, optional): :obj:`"mean"`, :obj:`"median"` or
            :obj:`None`. (default: :obj:`None`)
        balance_dim (int, optional): The dimension centred over.
            (default: :obj:`0`)
    """
    def __init__(self, balance: Optional[str] = None, balance_dim: int = 0):
        super().__init__()
        if balance is not None and balance not in BALANCES:
            raise ValueError(f"'balance' must be one of {BALANCES} or None "
                             f"(got {balance!r})")
        self.balance = balance
        self.balance_dim = balance_dim

    @classmethod
    def from_quantizer(cls, quantizer: Optional[Quantizer],
                       name: str) -> Optional['Binarize']:
        r"""The sign :obj:`quantizer` applies in evaluation, or :obj:`None`
        where it leaves values real (absent or switched off)."""
        if quantizer is None or not quantizer.fake_quant_enabled:
            return None
        if not isinstance(quantizer, SignQuantizer):
            raise TypeError(f"'{name}' is a {type(quantizer).__name__}; the "
                            f"deployed binary layers take a SignQuantizer "
                            f"or None")
        if quantizer.relaxed:
            raise ValueError(f"'{name}' is relaxed (stage 1 of cascaded "
                             f"distillation); call set_binarization_stage("
                             f"model, 2) or (model, 3) before convert()")
        return cls(quantizer.balance, quantizer.balance_dim)

    def codes(self, x: Tensor) -> Tensor:
        r""":obj:`int8` codes :math:`\pm 1` of :obj:`x` (finite: the
        deployed layers check their inputs once)."""
        if self.balance is not None and x.numel():
            x = balance(x, self.balance, self.balance_dim)
        return sign_codes(x, check=False)

    def signs(self, x: Tensor) -> Tensor:
        r"""The codes as :math:`\pm 1` values of :obj:`x`'s dtype."""
        return self.codes(x).to(x.dtype)

    def extra_repr(self) -> str:
        return '' if self.balance is None else \
            f'balance={self.balance!r}, balance_dim={self.balance_dim}'


class DeployedBinLinear(DeployedLayer):
    r"""The deployed :class:`~pyg_qgnn.nn.BinLinear`:

    .. math::
        \mathbf{y} = \sigma\Big(\big(\mathrm{sign}(\mathbf{W}) \circledast
        \mathrm{sign}(\mathrm{BN}(\mathbf{x}))\big) \odot \Gamma
        + \mathbf{b}\Big)

    with :math:`\mathrm{sign}(\mathbf{W})` stored as packed bits
    (:obj:`weight_packed`) and the product an exact :obj:`int32` binary
    matmul. A real weight (the last layer of a classifier) stays a float
    :obj:`weight`; a real input (no input sign) is multiplied in floating
    point with the unpacked signs.

    Args:
        in_channels (int): Size of each input sample.
        out_channels (int): Size of each output sample.
        bias (bool, optional): Holds a bias. (default: :obj:`True`)
        batch_norm (bool, optional): Holds the input batch normalization.
            (default: :obj:`True`)
        activation (str, optional): :obj:`"prelu"`, :obj:`"relu"` or
            :obj:`None`. (default: :obj:`"prelu"`)
        rescale_modes (tuple, optional): The modes of :math:`\Gamma`.
            (default: :obj:`()`)
        binary_weight (bool, optional): Store :math:`\mathrm{sign}
            (\mathbf{W})` packed rather than a real weight.
            (default: :obj:`True`)
        input_sign (Binarize, optional): The input binarization, or
            :obj:`None` for real inputs. (default: :obj:`None`)

    Shapes:
        - **input:** :math:`(*, F_{in})`
        - **output:** :math:`(*, F_{out})`
    """
    def __init__(self, in_channels: int, out_channels: int, bias: bool = True,
                 *, batch_norm: bool = True,
                 activation: Optional[str] = 'prelu',
                 rescale_modes: Tuple[int, ...] = (),
                 binary_weight: bool = True,
                 input_sign: Optional[Binarize] = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"'activation' must be one of {ACTIVATIONS} "
                             f"(got {activation!r})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.binary_weight = binary_weight
        if binary_weight:
            self.register_buffer('weight_packed', torch.zeros(
                out_channels, -(-in_channels // 8), dtype=torch.uint8))
            self.weight = None
        else:
            self.register_buffer('weight',
                                 torch.zeros(out_channels, in_channels))
            self.weight_packed = None
        self.register_buffer('bias', torch.zeros(out_channels) if bias
                             else None)
        self.norm = nn.BatchNorm1d(in_channels) if batch_norm else None
        self.input_sign = input_sign
        self.rescale = LearnedRescale(out_channels, rescale_modes)
        self.activation_name = activation
        self.activation = nn.PReLU() if activation == 'prelu' else (
            nn.ReLU() if activation == 'relu' else None)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    @torch.no_grad()
    def from_trained(cls, twin: BinLinear) -> 'DeployedBinLinear':
        weight_sign = Binarize.from_quantizer(twin.weight_quantizer,
                                              'weight_quantizer')
        layer = cls(twin.in_channels, twin.out_channels,
                    bias=twin.bias is not None,
                    batch_norm=twin.norm is not None,
                    activation=twin.activation_name,
                    rescale_modes=twin.rescale.modes,
                    binary_weight=weight_sign is not None,
                    input_sign=Binarize.from_quantizer(twin.input_quantizer,
                                                       'input_quantizer'))
        layer = layer.to(twin.weight.device)
        if weight_sign is not None:
            layer.weight_packed.copy_(pack_codes(weight_sign.codes(
                twin.weight.detach())))
        else:
            layer.weight.copy_(twin.weight)
        if twin.bias is not None:
            layer.bias.copy_(twin.bias)
        for part in ('norm', 'rescale', 'activation'):
            if getattr(layer, part) is not None:
                getattr(layer, part).load_state_dict(
                    getattr(twin, part).state_dict())
        return layer

    def weight_codes(self) -> Tensor:
        r"""The binary weight as :obj:`int8` codes :math:`(F_{out},
        F_{in})`."""
        return unpack_signs(self.weight_packed, self.in_channels)

    def normalize(self, x: Tensor) -> Tensor:
        if self.norm is None:
            return x
        return self.norm(x.reshape(-1, x.size(-1))).reshape(x.shape)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        rows = check_finite_features(x).reshape(-1, x.size(-1))
        if rows.size(0) <= ROW_BLOCK or not self.exact_by_rows():
            return self.finish(self.product(x))
        out = torch.cat([self.finish(self.product(block))
                         for block in rows.split(ROW_BLOCK)])
        return out.view(*x.shape[:-1], -1)

    def exact_by_rows(self) -> bool:
        r"""Whether the rows of the input go through independently and
        exactly: binary input (a sign without balance) and weight, so that
        the product is in integers, and fixed element-wise normalization
        and rescaling. Then row blocks give the values of the whole, and
        the input signs are thresholds (:meth:`input_thresholds`)."""
        return (self.input_sign is not None and self.binary_weight
                and self.input_sign.balance is None and not self.rescale.modes
                and (self.norm is None or self.norm.running_mean is not None))

    def product(self, x: Tensor) -> Tensor:
        r"""The product of the (normalized, binarized) input and the weight
        before rescaling: exact :obj:`int32` when both are binary. :obj:`x`
        must be finite."""
        x = self.normalize(x)
        if self.input_sign is None:
            weight = self.weight if self.weight is not None else \
                self.weight_codes().to(x.dtype)
            return F.linear(x, weight)
        codes = self.input_sign.codes(x)
        if self.weight is not None:
            return F.linear(codes.to(x.dtype), self.weight)
        dot = matmul_codes(codes.reshape(-1, self.in_channels),
                           self.weight_packed, self.in_channels)
        return dot.reshape(*x.shape[:-1], -1)

    def input_thresholds(self, dtype: torch.dtype
                         ) -> Optional[Tuple[Tensor, Tensor]]:
        r"""The input codes of :meth:`product` as per-channel thresholds on
        the raw input (:func:`~pyg_qgnn.deploy.binary_ops.sign_thresholds`
        of the batch normalization: :obj:`threshold_codes(x, *thresholds)`
        equals :obj:`self.input_sign.codes(self.normalize(x))` for every
        :obj:`x` of :obj:`dtype`), or :obj:`None` where they do not apply
        (not :meth:`exact_by_rows`, or a normalization with a zero scale,
        constant but NaN at infinity)."""
        if not self.exact_by_rows():
            return None
        return sign_thresholds(self.normalize, self.in_channels, dtype,
                               self.weight_packed.device)

    def finish(self, product: Tensor) -> Tensor:
        r"""Rescaling, bias and activation of :meth:`product`."""
        out = self.rescale(product.to(self.rescale.alpha.dtype))
        if self.bias is not None:
            out = out + self.bias
        return out if self.activation is None else self.activation(out)

    def monotone_directions(self) -> Optional[Tensor]:
        r"""Per output channel, :obj:`1` if :meth:`finish` never decreases
        as the product grows and :obj:`-1` if it never increases; :obj:`None`
        if it is not monotone (a negative PReLU slope, or a rescaling that
        varies over modes). Rounding keeps such maps monotone, so a maximum
        can then be taken over products before :meth:`finish`, exactly."""
        slopes = getattr(self.activation, 'weight', None)
        if self.rescale.modes or (slopes is not None
                                  and bool((slopes < 0).any())):
            return None
        return torch.where(self.rescale.alpha < 0, -1, 1)

    def __repr__(self) -> str:
        weight = '1-bit packed' if self.binary_weight else 'float'
        floats = [name for name in ('norm', 'rescale', 'bias', 'activation')
                  if getattr(self, name) is not None]
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, weight={weight}, input='
                f'{"binary" if self.input_sign is not None else "float"}, '
                f'float={floats})')


class DeployedBinEdgeConv(DeployedLayer, EdgeConv):
    r"""The deployed :class:`~pyg_qgnn.nn.BinEdgeConv` (Eq. 12–13):
    :class:`~torch_geometric.nn.EdgeConv` whose edge block is a
    :class:`DeployedBinLinear`. With max aggregation and a monotone block
    (:meth:`DeployedBinLinear.monotone_directions`) the maximum is taken
    over the integer products of the edges and the rescaling and PReLU run
    once per node, which gives the same values. Where the block's input
    signs are thresholds (:meth:`DeployedBinLinear.input_thresholds`), the
    product splits as in :class:`DeployedXorEdgeConv`,

    .. math::
        \mathrm{sign}(\mathbf{\Theta}) \circledast \mathrm{sign}\big(
        \mathrm{BN}(\mathbf{x}_i \,\Vert\, \mathbf{x}_j -
        \mathbf{x}_i)\big) = \mathbf{\Theta}_a^{\pm} \mathbf{s}_a(
        \mathbf{x}_i) + \mathbf{\Theta}_b^{\pm} \mathbf{s}_b(\mathbf{x}_j
        - \mathbf{x}_i)

    with :math:`\mathbf{s}` the thresholded codes: the node part once per
    node, the edge part an :obj:`int8` product of half the width per edge,
    and no batch normalization per edge (:func:`threshold_products`).

    Args:
        nn (DeployedBinLinear): The edge block, mapping
            :math:`[\mathbf{x}_i \,\Vert\, \mathbf{x}_j - \mathbf{x}_i]`.
        aggr (str, optional): The aggregation. (default: :obj:`"max"`)
    """
    def __init__(self, nn: DeployedBinLinear, aggr: str = 'max'):
        super().__init__(nn, aggr=aggr)
        self.in_channels = nn.in_channels // 2
        self.out_channels = nn.out_channels

    @classmethod
    def from_trained(cls, twin: BinEdgeConv) -> 'DeployedBinEdgeConv':
        return cls(DeployedBinLinear.from_trained(twin.nn), twin.aggr)

    @torch.no_grad()
    def forward(self, x: Union[Tensor, PairTensor], edge_index: Adj,
                group: Optional[int] = None) -> Tensor:
        r"""As :class:`EdgeConv`; :obj:`group` (the number of edges per
        node, when edges come grouped by target) allows a dense maximum."""
        if isinstance(x, Tensor):
            x = (x, x)
        for features in x[:1] if x[1] is x[0] else x:
            check_finite_features(features)
        directions = None
        if self.aggr == 'max' and isinstance(edge_index, Tensor):
            directions = self.nn.monotone_directions()
        if directions is None:  # the block on every edge, then aggregation
            return super().forward(x, edge_index)
        source, target = edge_index
        thresholds = self.nn.input_thresholds(x[1].dtype)
        if thresholds is not None:
            best = threshold_products(x, edge_index, self.nn.weight_codes(),
                                      thresholds, directions, group)
        else:
            x_i = x[1].index_select(0, target)
            x_j = x[0].index_select(0, source)
            products = self.nn.product(torch.cat([x_i, x_j - x_i], dim=-1))
            best = max_by_target(products, target, x[1].size(0), directions,
                                 group)
        return zero_isolated(self.nn.finish(best), target, group)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, aggr={self.aggr!r}, nn={self.nn})')


class DeployedDynamicBinEdgeConv(DeployedBinEdgeConv):
    r"""The deployed :class:`~pyg_qgnn.nn.DynamicBinEdgeConv`: the graph of
    the trained layer's :obj:`knn_graph` (real features; with max
    aggregation rebuilt by :func:`~pyg_qgnn.deploy.binary_edge.
    twin_knn_graph`, the same neighbours), then :class:`DeployedBinEdgeConv`.

    Args:
        nn (DeployedBinLinear): The edge block.
        knn_graph (torch.nn.Module): The twin's graph builder.
        aggr (str, optional): The aggregation. (default: :obj:`"max"`)
    """
    def __init__(self, nn: DeployedBinLinear, knn_graph: nn.Module,
                 aggr: str = 'max'):
        super().__init__(nn, aggr)
        self.knn_graph = knn_graph

    @classmethod
    def from_trained(cls, twin: DynamicBinEdgeConv
                     ) -> 'DeployedDynamicBinEdgeConv':
        return cls(DeployedBinLinear.from_trained(twin.nn), twin.knn_graph,
                   twin.aggr)

    @torch.no_grad()
    def forward(self, x: Tensor, batch: OptTensor = None) -> Tensor:
        # Max aggregation ignores the order of a node's edges, which is all
        # the twin's graph and twin_knn_graph's may differ in.
        edge_index = twin_knn_graph(self.knn_graph, x, batch) \
            if self.aggr == 'max' else self.knn_graph(x, batch)
        return super().forward(x, edge_index,
                               uniform_group(edge_index, x.size(0), self.k))

    @property
    def k(self) -> int:
        return self.knn_graph.k


class DeployedXorEdgeConv(DeployedLayer, EdgeConv):
    r"""The deployed :class:`~pyg_qgnn.nn.XorEdgeConv` (Eq. 17–20). On
    binary node features with binary weights the edge product splits into
    a node part and an XOR part, both exact in integers:

    .. math::
        \mathrm{sign}(\mathbf{\Theta}) \circledast [\mathbf{x}_i \,\Vert\,
        \mathbf{x}_i \oplus \mathbf{x}_j] = \mathbf{\Theta}_a^{\pm}
        \mathbf{x}_i + \mathbf{\Theta}_b^{\pm} (\mathbf{x}_i \oplus
        \mathbf{x}_j)

    where the node part is computed once per node and the XOR part per
    edge (as the XOR of packed codes for popcounts, or the negated
    :obj:`int8` product for the integer GEMM). With max aggregation and a
    monotone block the maximum is taken over the integer products, as in
    :class:`DeployedBinEdgeConv`. Real inputs (the first layer) or real
    weights take the twin's floating-point path.

    Args:
        nn (DeployedBinLinear): The edge block (no batch normalization).
        aggr (str, optional): The aggregation. (default: :obj:`"max"`)
        norm (str, optional): Batch normalization :obj:`"after"` (BF1) or
            :obj:`"before"` (BF2) the aggregation. (default: :obj:`"after"`)
        input_sign (Binarize, optional): Binarization of the node features,
            :obj:`None` for real ones. (default: :obj:`None`)
        output_sign (Binarize, optional): The outer sign.
            (default: :obj:`None`)
    """
    # x: real features, signs, or packed codes (then with node_dot, block).
    propagate_type = {'x': PairTensor, 'node_dot': OptTensor,
                      'block': OptTensor}

    def __init__(self, nn: DeployedBinLinear, aggr: str = 'max',
                 norm: str = 'after', *, input_sign: Optional[Binarize] = None,
                 output_sign: Optional[Binarize] = None):
        super().__init__(nn, aggr=aggr)
        self.in_channels = nn.in_channels // 2
        self.out_channels = nn.out_channels
        self.norm_placement = norm
        self.norm = torch.nn.BatchNorm1d(nn.out_channels).eval()
        self.input_sign = input_sign
        self.output_sign = output_sign

    @classmethod
    def from_trained(cls, twin: XorEdgeConv) -> 'DeployedXorEdgeConv':
        layer = cls(DeployedBinLinear.from_trained(twin.nn),
                    **cls.settings(twin))
        layer.norm.load_state_dict(twin.norm.state_dict())
        return layer.to(twin.norm.running_mean.device).requires_grad_(False)

    @classmethod
    def settings(cls, twin: XorEdgeConv) -> dict:
        r"""The constructor arguments, besides :obj:`nn`, of
        :obj:`twin`'s deployed form."""
        return dict(aggr=twin.aggr, norm=twin.norm_placement,
                    input_sign=Binarize.from_quantizer(twin.input_quantizer,
                                                       'input_quantizer'),
                    output_sign=Binarize.from_quantizer(
                        twin.output_quantizer, 'output_quantizer'))

    def codes(self, x: PairTensor) -> Optional[Tuple[Tensor, Tensor]]:
        r""":obj:`int8` codes of the (finite) node features, :obj:`None` if
        they stay real."""
        for features in x:
            check_finite_features(features)
        if self.input_sign is None:
            return None
        return self.input_sign.codes(x[0]), self.input_sign.codes(x[1])

    @torch.no_grad()
    def forward(self, x: Union[Tensor, PairTensor], edge_index: Adj) -> Tensor:
        if isinstance(x, Tensor):
            x = (x, x)
        return self.convolve(x, edge_index, self.codes(x))

    def convolve(self, x: PairTensor, edge_index: Adj,
                 codes: Optional[Tuple[Tensor, Tensor]],
                 group: Optional[int] = None) -> Tensor:
        r"""The layer on node features :obj:`x` whose codes are
        :obj:`codes`; :obj:`group` as in :meth:`DeployedBinEdgeConv.forward`.
        """
        if codes is None:
            out = self.propagate(edge_index, x=x, node_dot=None, block=None)
        elif not self.nn.binary_weight:
            signs = (codes[0].to(x[0].dtype), codes[1].to(x[1].dtype))
            out = self.propagate(edge_index, x=signs, node_dot=None,
                                 block=None)
        else:
            out = self.binary_convolve(codes, edge_index, group)
        return out if self.output_sign is None else self.output_sign.signs(out)

    def binary_convolve(self, codes: Tuple[Tensor, Tensor], edge_index: Adj,
                        group: Optional[int]) -> Tensor:
        r"""Binary features and weights: the node part of the product once
        per node, the XOR part per edge, and where the block is monotone the
        maximum taken over integer products (exact, see
        :meth:`DeployedBinLinear.monotone_directions`)."""
        channels = self.in_channels
        weight = self.nn.weight_codes()
        node_weight = weight[:, :channels].contiguous()
        edge_weight = weight[:, channels:].contiguous()
        node_dot = matmul_codes(codes[1], node_weight, channels)
        directions = self.monotone_directions(edge_index)
        if directions is None:
            packed = (pack_codes(codes[0]), pack_codes(codes[1]))
            return self.propagate(edge_index, x=packed, node_dot=node_dot,
                                  block=edge_weight)
        source, target = edge_index
        products = matmul_codes(xor_codes(codes, edge_index), edge_weight,
                                channels)
        # max_j (node_i + e_ij) = node_i + max_j e_ij, exactly in integers.
        dot = node_dot + max_by_target(products, target, codes[1].size(0),
                                       directions, group)
        out = self.nn.finish(dot)
        if self.norm_placement == 'before':
            out = self.norm(out)
        return self.update(zero_isolated(out, target, group))

    def monotone_directions(self, edge_index: Adj) -> Optional[Tensor]:
        r"""The directions of :meth:`DeployedBinLinear.monotone_directions`
        through the batch normalization of BF2, or :obj:`None` where the
        messages must be aggregated one by one."""
        if self.aggr != 'max' or not isinstance(edge_index, Tensor):
            return None
        directions = self.nn.monotone_directions()
        if directions is None or self.norm_placement == 'after':
            return directions
        if not self.norm.track_running_stats:
            return None
        if self.norm.weight is None:
            return directions
        return directions * torch.where(self.norm.weight < 0, -1, 1)

    def message(self, x_i: Tensor, x_j: Tensor, node_dot_i: OptTensor,
                block: OptTensor) -> Tensor:
        if node_dot_i is None:  # the twin's floating-point path
            edge = x_j - x_i if self.input_sign is None else -x_j * x_i
            out = self.nn(torch.cat([x_i, edge], dim=-1))
        else:  # x holds packed codes: their XOR is -x_j * x_i
            dot = node_dot_i + matmul_codes(x_j ^ x_i, block,
                                            self.in_channels)
            out = self.nn.finish(dot)
        return self.norm(out) if self.norm_placement == 'before' else out

    def update(self, inputs: Tensor) -> Tensor:
        return self.norm(inputs) if self.norm_placement == 'after' else inputs

    def __repr__(self) -> str:
        signs = [name for name in ('input_sign', 'output_sign')
                 if getattr(self, name) is not None]
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, aggr={self.aggr!r}, '
                f'norm={self.norm_placement!r}, signs={signs}, '
                f'nn={self.nn}, float=[\'norm\'])')


class DeployedDynamicXorEdgeConv(DeployedXorEdgeConv):
    r"""The deployed :class:`~pyg_qgnn.nn.DynamicXorEdgeConv`: on binary
    features the graph comes from Hamming distances of the packed codes
    (:func:`~pyg_qgnn.deploy.hamming_knn`, the point itself included), on
    real features from the twin's :obj:`knn_graph`.

    Args:
        nn (DeployedBinLinear): The edge block.
        knn_graph (torch.nn.Module): The twin's graph builder (its
            :obj:`k`, and its metric for real features).
        **kwargs (optional): Arguments of :class:`DeployedXorEdgeConv`.
    """
    def __init__(self, nn: DeployedBinLinear, knn_graph: torch.nn.Module,
                 **kwargs):
        super().__init__(nn, **kwargs)
        self.knn_graph = knn_graph

    @classmethod
    def settings(cls, twin: DynamicXorEdgeConv) -> dict:
        return dict(super().settings(twin), knn_graph=twin.knn_graph)

    @property
    def k(self) -> int:
        return self.knn_graph.k

    @torch.no_grad()
    def forward(self, x: Tensor, batch: OptTensor = None) -> Tensor:
        codes = self.codes((x, x))
        if codes is None:
            edge_index = self.knn_graph(x, batch)
        else:
            edge_index = hamming_knn(pack_codes(codes[0]), self.k, batch,
                                     num_bits=x.size(-1), loop=True)
        return self.convolve((x, x), edge_index, codes,
                             uniform_group(edge_index, x.size(0), self.k))


def xor_codes(codes: Tuple[Tensor, Tensor], edge_index: Tensor) -> Tensor:
    r"""The edge features :math:`-\mathbf{x}_j \odot \mathbf{x}_i` of
    :obj:`int8` node codes (source, target) in the form the binary matmul
    of this machine takes: the XOR of packed codes for popcounts, the
    negated :obj:`int8` product for the integer GEMM."""
    source, target = edge_index
    if backend().binary_matmul == 'popcount':
        return xor_edge_features((pack_codes(codes[0]), pack_codes(codes[1])),
                                 edge_index)
    edge = codes[0].index_select(0, source) * codes[1].index_select(0, target)
    return edge.neg_()


def max_by_target(products: Tensor, target: Tensor, num_nodes: int,
                  directions: Tensor, group: Optional[int] = None) -> Tensor:
    r"""Per node and channel, the largest product of its incoming edges
    where :obj:`directions` is :obj:`1` and the smallest where it is
    :obj:`-1` (0 for a node without edges, as PyG's max aggregation).
    :obj:`group`: every node has that many edges, grouped by target, so the
    maximum is a dense reduction."""
    flip = bool((directions < 0).any())
    directions = directions.to(products.dtype)
    signed = products * directions if flip else products
    best = largest_by_target(signed, target, num_nodes, group)
    return best * directions if flip else best


def zero_isolated(out: Tensor, target: Tensor,
                  group: Optional[int] = None) -> Tensor:
    r"""Zeroes the rows of nodes without incoming edges, which PyG's
    aggregation leaves at 0 before any later step."""
    if group is None:
        isolated = torch.bincount(target, minlength=out.size(0)) == 0
        if bool(isolated.any()):
            out = out.masked_fill(isolated.unsqueeze(-1), 0.0)
    return out


def uniform_group(edge_index: Tensor, num_nodes: int,
                  k: int) -> Optional[int]:
    r""":obj:`k` if the kNN graph :obj:`edge_index` (grouped by target in
    increasing order, at most :obj:`k` edges each) gives every node exactly
    :obj:`k` edges, else :obj:`None`."""
    return k if edge_index.size(1) == num_nodes * k else None


register_deployed_layer(BinLinear, DeployedBinLinear)
register_deployed_layer(BinEdgeConv, DeployedBinEdgeConv)
register_deployed_layer(DynamicBinEdgeConv, DeployedDynamicBinEdgeConv)
register_deployed_layer(XorEdgeConv, DeployedXorEdgeConv)
register_deployed_layer(DynamicXorEdgeConv, DeployedDynamicXorEdgeConv)
