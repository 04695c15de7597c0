from typing import Optional

from torch import Tensor, nn
from torch_geometric.nn.conv import GCNConv
from torch_geometric.typing import Adj, OptTensor

from pyg_qgnn.nn.quant_layer import QUANT_POINTS, QuantLayer, parent_method
from pyg_qgnn.quantizers import Quantizer


class QuantGCNConv(QuantLayer, GCNConv):
    r"""The graph convolution of `Kipf and Welling
    <https://arxiv.org/abs/1609.02907>`_ with quantization-aware training
    (fake quantization at input, weight, message, aggregate and output, as
    in `Degree-Quant <https://arxiv.org/abs/2008.05000>`_).

    .. math::
        \mathbf{x}^{\prime}_i = Q_{out}\Big(Q_{agg}\Big(\sum_{j \in
        \mathcal{N}(i) \cup \{ i \}} Q_{msg}\big(\tfrac{e_{j,i}}
        {\sqrt{\hat{d}_j \hat{d}_i}}\, Q_{w}(\mathbf{\Theta})^{\top}
        Q_{in}(\mathbf{x}_j)\big)\Big) + \mathbf{b}\Big)

    Every slot is optional; with none (or all switched off with
    :func:`~pyg_qgnn.quantizers.disable_fake_quant`) the layer equals
    :class:`~torch_geometric.nn.conv.GCNConv` numerically and shares its
    state-dict keys. The message quantizer acts on every propagation path:
    for a :class:`torch.sparse.Tensor` or :class:`torch_sparse.SparseTensor`
    adjacency the fused sparse product is replaced by explicit per-edge
    messages while it is on. :func:`torch.jit.script` and
    :func:`torch.compile` work as for :class:`GCNConv` (see
    :class:`~pyg_qgnn.nn.QuantLayer` for TorchScript and quantizers).

    Args:
        in_channels (int): Size of each input sample, or :obj:`-1`.
        out_channels (int): Size of each output sample.
        improved (bool, optional): See :class:`GCNConv`. (default: :obj:`False`)
        cached (bool, optional): See :class:`GCNConv`. (default: :obj:`False`)
        add_self_loops (bool, optional): See :class:`GCNConv`.
            (default: :obj:`None`)
        normalize (bool, optional): See :class:`GCNConv`. (default: :obj:`True`)
        bias (bool, optional): See :class:`GCNConv`. (default: :obj:`True`)
        input_quantizer (Quantizer, optional): :math:`Q_{in}`.
            (default: :obj:`None`)
        weight_quantizer (Quantizer, optional): :math:`Q_{w}`, held by
            :obj:`self.lin`. (default: :obj:`None`)
        message_quantizer (Quantizer, optional): :math:`Q_{msg}`.
            (default: :obj:`None`)
        aggregate_quantizer (Quantizer, optional): :math:`Q_{agg}`.
            (default: :obj:`None`)
        output_quantizer (Quantizer, optional): :math:`Q_{out}`.
            (default: :obj:`None`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, F_{in})`,
          edge indices :math:`(2, |\mathcal{E}|)`
          or sparse matrix :math:`(|\mathcal{V}|, |\mathcal{V}|)`,
          edge weights :math:`(|\mathcal{E}|)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})`
    """
    quant_points = QUANT_POINTS

    _float_forward = parent_method(GCNConv, 'forward')
    _float_message = parent_method(GCNConv, 'message')
    _float_message_and_aggregate = parent_method(GCNConv,
                                                 'message_and_aggregate')

    def __init__(self, in_channels: int, out_channels: int,
                 improved: bool = False, cached: bool = False,
                 add_self_loops: Optional[bool] = None, normalize: bool = True,
                 bias: bool = True, *,
                 input_quantizer: Optional[Quantizer] = None,
                 weight_quantizer: Optional[Quantizer] = None,
                 message_quantizer: Optional[Quantizer] = None,
                 aggregate_quantizer: Optional[Quantizer] = None,
                 output_quantizer: Optional[Quantizer] = None, **kwargs):
        super().__init__(in_channels, out_channels, improved, cached,
                         add_self_loops, normalize, bias, **kwargs)
        self._quantize_linears(['lin'], weight_quantizer)
        self._init_quantizers(dict(input=input_quantizer,
                                   message=message_quantizer,
                                   aggregate=aggregate_quantizer,
                                   output=output_quantizer))
        self.reset_parameters()

    @property
    def weight_quantizer(self) -> Optional[Quantizer]:
        # Held by self.lin, so the state-dict keys stay those of GCNConv.
        return getattr(self.lin, 'weight_quantizer', None)

    def reset_parameters(self):
        super().reset_parameters()
        self.reset_quantizers()

    def forward(self, x: Tensor, edge_index: Adj,
                edge_weight: OptTensor = None) -> Tensor:
        out = self._float_forward(self.quant('input', x), edge_index,
                                  edge_weight)
        return self.quant('output', out)

    def message(self, x_j: Tensor, edge_weight: OptTensor) -> Tensor:
        return self.quant('message', self._float_message(x_j, edge_weight))

    def message_and_aggregate(self, adj_t: Adj, x: Tensor) -> Tensor:
        if not self.quantizes_messages():
            return self._float_message_and_aggregate(adj_t, x)
        # A fused sparse product never forms the messages Q_msg acts on.
        edge_index, value, num_targets = self.sparse_edges(adj_t)
        x_j = x.index_select(self.node_dim, edge_index[1])
        return self.aggregate(self.message(x_j, value), edge_index[0],
                              dim_size=num_targets)

    def update(self, inputs: Tensor) -> Tensor:
        return self.quant('aggregate', inputs)

    @classmethod
    def float_kwargs(cls, module: nn.Module) -> dict:
        return dict(in_channels=module.in_channels,
                    out_channels=module.out_channels,
                    improved=module.improved, cached=module.cached,
                    add_self_loops=module.add_self_loops,
                    normalize=module.normalize,
                    bias=module.bias is not None,
                    **cls.message_passing_kwargs(module))

    def __repr__(self) -> str:
        extra = self.quant_repr()
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}{", " + extra if extra else ""})')
