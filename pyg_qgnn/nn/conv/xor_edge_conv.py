from typing import Optional, Union

import torch
from torch import Tensor, nn
from torch_geometric.nn.conv import EdgeConv
from torch_geometric.typing import Adj, PairTensor

from pyg_qgnn.nn.conv.bin_edge_conv import edge_conv_repr
from pyg_qgnn.nn.dense.bin_linear import (
    BinLinear,
    QuantizerArg,
    make_sign_quantizer,
)
from pyg_qgnn.nn.quant_layer import QuantLayer
from pyg_qgnn.quantizers import Quantizer
from pyg_qgnn.quantizers.binary import SignQuantizer

NORM_PLACEMENTS = ('after', 'before')


class XorEdgeConv(QuantLayer, EdgeConv):
    r"""The edge convolution on binary node features of `Bahri et al., 2021
    <https://arxiv.org/abs/2012.15823>`_ (Eq. 17–20, the "BF" models). For
    :math:`\mathbf{x} \in \{-1, 1\}^F` the difference
    :math:`\mathbf{x}_j - \mathbf{x}_i` of EdgeConv becomes the XOR
    :math:`\mathbf{x}_i \oplus \mathbf{x}_j = -\mathbf{x}_j \odot
    \mathbf{x}_i`:

    .. math::
        \mathbf{e}_{ij} &= \sigma\big(\mathrm{sign}(\mathbf{\Theta})
        \circledast [\mathbf{x}_i \,\Vert\, -\mathbf{x}_j \odot \mathbf{x}_i]
        \odot \Gamma\big)

        \mathbf{x}^{\prime}_i &= \mathrm{sign}\Big(\mathrm{BN}\big(
        \max_{j \in \mathcal{N}(i)} \mathbf{e}_{ij}\big)\Big)
        \quad \text{("BF1", Eq. 19)}

        \mathbf{x}^{\prime}_i &= \mathrm{sign}\Big(\max_{j \in
        \mathcal{N}(i)} \mathrm{BN}(\mathbf{e}_{ij})\Big)
        \quad \text{("BF2", Eq. 20)}

    with :math:`\sigma` a PReLU and :math:`\Gamma` channel-wise (Eq. 10).
    The input quantizer makes the node features binary (the identity on
    features that are binary already). While it does not binarize (stage 0
    or 1 of :func:`~pyg_qgnn.quantizers.set_binarization_stage`, or
    :obj:`input_quantizer=None` for real coordinates) the edge feature is
    the difference :math:`\mathbf{x}_j - \mathbf{x}_i`, as in the authors'
    code, and with every quantizer off the layer is
    :obj:`EdgeConv(self.nn, aggr)` with batch normalization at the chosen
    place.

    Args:
        in_channels (int): Size of each node feature.
        out_channels (int): Size of each output feature.
        aggr (str, optional): The aggregation. (default: :obj:`"max"`)
        norm (str, optional): Batch normalization :obj:`"after"` the
            aggregation (BF1) or :obj:`"before"` it, on every message (BF2).
            (default: :obj:`"after"`)
        bias (bool, optional): Learn an additive bias in the edge block.
            (default: :obj:`False`)
        activation (str, optional): :math:`\sigma`: :obj:`"prelu"`,
            :obj:`"relu"` or :obj:`None`. (default: :obj:`"prelu"`)
        input_quantizer (Quantizer or str, optional): Binarization of the
            node features: :obj:`"sign"` (a :class:`SignQuantizer` that leaves
            already relaxed inputs alone in stage 1), a quantizer, or
            :obj:`None` for real inputs. (default: :obj:`"sign"`)
        weight_quantizer (Quantizer or str, optional): Binarization of
            :math:`\mathbf{\Theta}`, held by :obj:`self.nn`.
            (default: :obj:`"sign"`)
        output_quantizer (Quantizer or str, optional): The outer sign.
            (default: :obj:`"sign"`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V}|, F_{in}), (|\mathcal{V}|, F_{in}))`
          if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)`
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})` or
          :math:`(|\mathcal{V}_t|, F_{out})` if bipartite
    """
    quant_points = ('input', 'weight', 'output')

    def __init__(self, in_channels: int, out_channels: int, aggr: str = 'max',
                 norm: str = 'after', *, bias: bool = False,
                 activation: Optional[str] = 'prelu',
                 input_quantizer: QuantizerArg = 'sign',
                 weight_quantizer: QuantizerArg = 'sign',
                 output_quantizer: QuantizerArg = 'sign', **kwargs):
        if norm not in NORM_PLACEMENTS:
            raise ValueError(f"'norm' must be one of {NORM_PLACEMENTS} "
                             f"(got {norm!r})")
        block = BinLinear(2 * in_channels, out_channels, bias=bias,
                          batch_norm=False, activation=activation,
                          input_quantizer=None,
                          weight_quantizer=weight_quantizer)
        super().__init__(block, aggr=aggr, **kwargs)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm_placement = norm
        self.norm = nn.BatchNorm1d(out_channels)
        self._init_quantizers(dict(
            input=make_sign_quantizer(input_quantizer, 'input_quantizer',
                                      relaxation=None),
            output=make_sign_quantizer(output_quantizer, 'output_quantizer')))

    @property
    def weight_quantizer(self) -> Optional[Quantizer]:
        return self.nn.weight_quantizer

    def reset_parameters(self):
        super().reset_parameters()
        if hasattr(self, 'norm'):  # EdgeConv resets before it exists
            self.norm.reset_parameters()
        self.reset_quantizers()

    @property
    def binary_input(self) -> bool:
        r"""Whether the input quantizer makes the node features exactly
        :math:`\pm 1`, so that edges carry their XOR."""
        quantizer = getattr(self, 'input_quantizer', None)
        return isinstance(quantizer, SignQuantizer) and quantizer.binarizing

    def forward(self, x: Union[Tensor, PairTensor], edge_index: Adj) -> Tensor:
        if isinstance(x, Tensor):
            x = (x, x)
        x = (self.quant('input', x[0]), self.quant('input', x[1]))
        return self.convolve(x, edge_index)

    def convolve(self, x: PairTensor, edge_index: Adj) -> Tensor:
        r"""The layer on node features that passed the input quantizer."""
        return self.quant('output', self.propagate(edge_index, x=x))

    def message(self, x_i: Tensor, x_j: Tensor) -> Tensor:
        edge = -x_j * x_i if self.binary_input else x_j - x_i
        out = self.nn(torch.cat([x_i, edge], dim=-1))
        return self.norm(out) if self.norm_placement == 'before' else out

    def update(self, inputs: Tensor) -> Tensor:
        return self.norm(inputs) if self.norm_placement == 'after' else inputs

    def extra_settings(self) -> str:
        return f'aggr={self.aggr!r}, norm={self.norm_placement!r}'

    def __repr__(self) -> str:
        return edge_conv_repr(self)
