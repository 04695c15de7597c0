r"""The binary GraphSAGE of `Bahri et al., 2021
<https://arxiv.org/abs/2012.15823>`_ (§4.3, §5.2) as a PyG
:class:`~torch_geometric.nn.models.basic_gnn.BasicGNN` model."""
from typing import Final, Optional, Tuple, Union

from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.models.basic_gnn import BasicGNN

from pyg_qgnn.nn.conv.bin_sage_conv import BinSAGEConv


class BinGraphSAGE(BasicGNN):
    r"""GraphSAGE of :class:`~pyg_qgnn.nn.BinSAGEConv` layers (Eq. 14–15),
    by default the OGB baseline the paper binarizes (§5.2): three layers of
    256 channels, mean aggregation, dropout 0.5.

    .. math::
        \mathbf{x}^{(l)}_i = \mathrm{sign}\Big(\big(\mathrm{sign}
        (\mathbf{W}^{(l)}) \circledast \mathrm{sign}\big(\mathrm{BN}\big(
        \big[\mathbf{x}^{(l-1)}_i \,\Vert\, \mathrm{mean}_{j}\,
        \mathbf{x}^{(l-1)}_j\big]\big)\big)\big) \odot \Gamma^{(l)} +
        \mathbf{b}^{(l)}\Big)

    As in the authors' OGB-Products model, the first layer sees the real
    input features (binary weights, no batch normalization, no sign), every
    layer has binary weights ("for GraphSAGE, all three layers have binary
    weights"), there is no PReLU and the last layer's output, the logits, is
    real. Unlike the paper, the hidden layers binarize their outputs
    (:obj:`binary_features=True`, the outer sign above): the next layer's
    :math:`\mathrm{BN}` and sign then act on :math:`\pm 1` features and
    their mean, which the deployed model
    (:func:`pyg_qgnn.deploy.convert`) aggregates as integers. With
    :obj:`binary_features=False` the hidden features stay real, exactly as
    Eq. 15 (and the deployed model aggregates floats).

    :obj:`num_layers`, :obj:`hidden_channels`, :obj:`dropout`, :obj:`jk`
    and :meth:`inference` (layer-wise full-graph inference with a
    :class:`~torch_geometric.loader.NeighborLoader`) are those of PyG's
    :class:`~torch_geometric.nn.models.GraphSAGE`; the sign is the
    non-linearity, so :obj:`act` defaults to :obj:`None`.

    Args:
        in_channels (int or tuple): Size of each input sample.
        hidden_channels (int, optional): Size of each hidden sample.
            (default: :obj:`256`)
        num_layers (int, optional): Number of message passing layers.
            (default: :obj:`3`)
        out_channels (int, optional): Size of the output (the last layer's
            width); :obj:`None` for :obj:`hidden_channels`.
            (default: :obj:`None`)
        dropout (float, optional): Dropout probability. (default: :obj:`0.5`)
        act (str or Callable, optional): An activation between layers, as in
            :class:`~torch_geometric.nn.models.basic_gnn.BasicGNN`; must be
            :obj:`None` with :obj:`binary_features`. (default: :obj:`None`)
        binary_features (bool, optional): Binarize the hidden layers'
            outputs. (default: :obj:`True`)
        keep_first_input_real (bool, optional): The first layer takes the
            real input features. (default: :obj:`True`)
        keep_last_weight_real (bool, optional): The last layer keeps real
            weights, as the DGCNN classifier of the paper does; its real
            :math:`F_{hidden} \times F_{out}` weight then dominates the
            stored size. (default: :obj:`False`)
        activation (str, optional): :math:`\sigma` inside every layer:
            :obj:`"prelu"`, :obj:`"relu"` or :obj:`None`.
            (default: :obj:`None`)
        **kwargs (optional): Additional arguments of :class:`BasicGNN`
            (:obj:`jk`, :obj:`norm`, ...) and :class:`BinSAGEConv`
            (:obj:`aggr`, :obj:`normalize`, ...).

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})`, edge
          indices :math:`(2, |\mathcal{E}|)` or a sparse adjacency
        - **output:** :math:`(|\mathcal{V}|, F_{out})`
    """
    supports_edge_weight: Final[bool] = False
    supports_edge_attr: Final[bool] = False
    supports_norm_batch: Final[bool]

    def __init__(self, in_channels: Union[int, Tuple[int, int]],
                 hidden_channels: int = 256, num_layers: int = 3,
                 out_channels: Optional[int] = None, dropout: float = 0.5,
                 act=None, *, binary_features: bool = True,
                 keep_first_input_real: bool = True,
                 keep_last_weight_real: bool = False,
                 activation: Optional[str] = None, **kwargs):
        if binary_features and act is not None:
            raise ValueError(f"'act' must be None when 'binary_features' is "
                             f"True: the hidden layers output signs, which "
                             f"an activation would change (got {act!r})")
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) \
                or num_layers < 1:
            raise ValueError(f"'num_layers' must be a positive int "
                             f"(got {num_layers!r})")
        self.binary_features = binary_features
        self.keep_first_input_real = keep_first_input_real
        self.keep_last_weight_real = keep_last_weight_real
        super().__init__(in_channels, hidden_channels, num_layers,
                         out_channels, dropout, act, activation=activation,
                         **kwargs)

    def init_conv(self, in_channels: Union[int, Tuple[int, int]],
                  out_channels: int, **kwargs) -> MessagePassing:
        layer = len(self.convs)  # BasicGNN builds the layers in order
        real_input = layer == 0 and self.keep_first_input_real
        last = layer == self.num_layers - 1
        return BinSAGEConv(
            in_channels, out_channels, batch_norm=not real_input,
            input_quantizer=None if real_input else 'sign',
            weight_quantizer=None if last and self.keep_last_weight_real
            else 'sign',
            output_quantizer='sign' if self.binary_features and not last
            else None, **kwargs)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, num_layers={self.num_layers}, '
                f'hidden_channels={self.hidden_channels}, '
                f'binary_features={self.binary_features})')
