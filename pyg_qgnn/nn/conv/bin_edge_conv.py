from typing import Optional

from torch_geometric.nn.conv import EdgeConv

from pyg_qgnn.nn.dense.bin_linear import BinLinear, QuantizerArg
from pyg_qgnn.nn.quant_layer import QuantLayer
from pyg_qgnn.quantizers import Quantizer


class BinEdgeConv(QuantLayer, EdgeConv):
    r"""The binary edge convolution of `Bahri et al., 2021
    <https://arxiv.org/abs/2012.15823>`_ (Eq. 12–13, the "RF" model: real
    node features), a drop-in for :class:`torch_geometric.nn.EdgeConv`
    whose edge MLP :math:`h_{\mathbf{\Theta}}` is an XNOR-Net++ block
    (:class:`~pyg_qgnn.nn.BinLinear`):

    .. math::
        \mathbf{e}_{ij} &= \sigma\Big(\mathrm{sign}(\mathbf{\Theta})
        \circledast \mathrm{sign}\big(\mathrm{BN}(\mathbf{x}_i \,\Vert\,
        \mathbf{x}_j - \mathbf{x}_i)\big) \odot \Gamma\Big)

        \mathbf{x}^{\prime}_i &= \max_{j \in \mathcal{N}(i)} \mathbf{e}_{ij}

    with :math:`\sigma` a PReLU and :math:`\Gamma` a learned channel-wise
    rescaling (Eq. 10). The block is :obj:`self.nn`, so with binarization
    off (:func:`~pyg_qgnn.quantizers.disable_fake_quant`) the layer equals
    :obj:`EdgeConv(self.nn, aggr)`.

    Args:
        in_channels (int): Size of each node feature.
        out_channels (int): Size of each output feature.
        aggr (str, optional): The aggregation, as for :class:`EdgeConv`.
            (default: :obj:`"max"`)
        bias (bool, optional): Learn an additive bias in the block.
            (default: :obj:`False`)
        activation (str, optional): :math:`\sigma`: :obj:`"prelu"`,
            :obj:`"relu"` or :obj:`None`. (default: :obj:`"prelu"`)
        input_quantizer (Quantizer or str, optional): Binarization of the
            normalized edge features: :obj:`"sign"`, a quantizer, or
            :obj:`None` for real inputs (the first layer on coordinates).
            Held by :obj:`self.nn`. (default: :obj:`"sign"`)
        weight_quantizer (Quantizer or str, optional): Binarization of
            :math:`\mathbf{\Theta}`, likewise. (default: :obj:`"sign"`)
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
    quant_points = ('input', 'weight')

    def __init__(self, in_channels: int, out_channels: int, aggr: str = 'max',
                 *, bias: bool = False, activation: Optional[str] = 'prelu',
                 input_quantizer: QuantizerArg = 'sign',
                 weight_quantizer: QuantizerArg = 'sign', **kwargs):
        block = BinLinear(2 * in_channels, out_channels, bias=bias,
                          activation=activation,
                          input_quantizer=input_quantizer,
                          weight_quantizer=weight_quantizer)
        super().__init__(block, aggr=aggr, **kwargs)
        self.in_channels = in_channels
        self.out_channels = out_channels

    # Held by self.nn, so the keys stay those of EdgeConv(self.nn).
    @property
    def input_quantizer(self) -> Optional[Quantizer]:
        return self.nn.input_quantizer

    @property
    def weight_quantizer(self) -> Optional[Quantizer]:
        return self.nn.weight_quantizer

    def extra_settings(self) -> str:
        return f'aggr={self.aggr!r}'

    def __repr__(self) -> str:
        return edge_conv_repr(self)


def edge_conv_repr(conv: QuantLayer) -> str:
    r"""``Name(in, out, <settings>, <bit widths>)`` of the binary edge
    convolutions."""
    extra = ', '.join(filter(None, (conv.extra_settings(), conv.quant_repr())))
    return (f'{conv.__class__.__name__}({conv.in_channels}, '
            f'{conv.out_channels}, {extra})')
