from typing import Optional, Tuple, Union

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.conv import GATConv
from torch_geometric.typing import (
    Adj,
    OptPairTensor,
    OptTensor,
    Size,
    SparseTensor,
)
from torch_geometric.utils import softmax

from pyg_qgnn.nn.quant_layer import QuantLayer, parent_method
from pyg_qgnn.quantizers import Quantizer


class QuantGATConv(QuantLayer, GATConv):
    r"""The graph attentional operator of `Veličković et al.
    <https://arxiv.org/abs/1710.10903>`_ with quantization-aware training
    (fake quantization at input, weight, attention, message, aggregate and
    output, as in `Degree-Quant <https://arxiv.org/abs/2008.05000>`_).

    .. math::
        \mathbf{x}^{\prime}_i = Q_{out}\Big(Q_{agg}\Big(
        \sum_{j \in \mathcal{N}(i) \cup \{ i \}} Q_{msg}\big(\alpha_{i,j}\,
        Q_{w}(\mathbf{\Theta}_s)\, Q_{in}(\mathbf{x}_j)\big)\Big)
        + \mathbf{b}\Big),

    where the attention coefficients are quantized after the softmax (and
    before dropout, which only training applies),

    .. math::
        \alpha_{i,j} = Q_{att}\Big(\mathrm{softmax}_{j}\Big(
        \mathrm{LeakyReLU}\big(\mathbf{a}^{\top}_{s}\mathbf{h}_j
        + \mathbf{a}^{\top}_{t}\mathbf{h}^{\prime}_i
        + \mathbf{a}^{\top}_{e} Q_{w}(\mathbf{\Theta}_e)\,
        \mathbf{e}_{j,i}\big)\Big)\Big),\qquad
        \mathbf{h}_j = Q_{w}(\mathbf{\Theta}_s) Q_{in}(\mathbf{x}_j),\;
        \mathbf{h}^{\prime}_i = Q_{w}(\mathbf{\Theta}_t) Q_{in}(\mathbf{x}_i).

    Heads are concatenated or averaged before :math:`\mathbf{b}` is added
    (and, with :obj:`residual=True`, the skip connection
    :math:`Q_{w}(\mathbf{\Theta}_r) Q_{in}(\mathbf{x}_i)`). Each weight matrix
    is fake-quantized with a range of its own; the attention vectors
    :math:`\mathbf{a}`, the bias and edge features stay in floating point.

    Every slot is optional; with none (or all switched off with
    :func:`~pyg_qgnn.quantizers.disable_fake_quant`) the layer equals
    :class:`~torch_geometric.nn.conv.GATConv` numerically and shares its
    state-dict keys. :obj:`return_attention_weights` returns the
    coefficients the messages used (quantized, and with dropout in
    training). :func:`torch.compile` works as for :class:`GATConv`.

    Args:
        in_channels (int or tuple): Size of each input sample, :obj:`-1`,
            or the sizes of source and target features.
        out_channels (int): Size of each output sample (per head).
        heads (int, optional): Number of attention heads. (default: :obj:`1`)
        concat (bool, optional): Concatenate the heads (else average).
            (default: :obj:`True`)
        negative_slope (float, optional): LeakyReLU angle of the negative
            slope. (default: :obj:`0.2`)
        dropout (float, optional): Dropout probability of the attention
            coefficients. (default: :obj:`0`)
        add_self_loops (bool, optional): See :class:`GATConv`.
            (default: :obj:`True`)
        edge_dim (int, optional): Edge feature dimensionality.
            (default: :obj:`None`)
        fill_value (float or torch.Tensor or str, optional): See
            :class:`GATConv`. (default: :obj:`"mean"`)
        bias (bool, optional): See :class:`GATConv`. (default: :obj:`True`)
        residual (bool, optional): See :class:`GATConv`.
            (default: :obj:`False`)
        input_quantizer (Quantizer, optional): :math:`Q_{in}`, applied once
            to each node feature matrix (to each side of a bipartite pair).
            (default: :obj:`None`)
        weight_quantizer (Quantizer, optional): :math:`Q_{w}`, held by
            :obj:`self.lin` (:obj:`self.lin_src` if bipartite);
            :obj:`lin_dst`, :obj:`lin_edge` and :obj:`res` hold copies.
            (default: :obj:`None`)
        attention_quantizer (Quantizer, optional): :math:`Q_{att}`.
            (default: :obj:`None`)
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
          node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V_s}|, F_{s}), (|\mathcal{V_t}|, F_{t}))`
          if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)`
          or sparse matrix :math:`(|\mathcal{V_t}|, |\mathcal{V_s}|)`,
          edge features :math:`(|\mathcal{E}|, D)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, H * F_{out})` or
          :math:`(|\mathcal{V}_t|, H * F_{out})` if bipartite; with
          :obj:`return_attention_weights`, also the edges and their
          coefficients :math:`(|\mathcal{E}|, H)` as in :class:`GATConv`
    """
    quant_points = ('input', 'weight', 'attention', 'message', 'aggregate',
                    'output')

    _float_forward = parent_method(GATConv, 'forward')

    def __init__(
        self,
        in_channels: Union[int, Tuple[int, int]],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        add_self_loops: bool = True,
        edge_dim: Optional[int] = None,
        fill_value: Union[float, Tensor, str] = 'mean',
        bias: bool = True,
        residual: bool = False,
        *,
        input_quantizer: Optional[Quantizer] = None,
        weight_quantizer: Optional[Quantizer] = None,
        attention_quantizer: Optional[Quantizer] = None,
        message_quantizer: Optional[Quantizer] = None,
        aggregate_quantizer: Optional[Quantizer] = None,
        output_quantizer: Optional[Quantizer] = None,
        **kwargs,
    ):
        super().__init__(in_channels, out_channels, heads, concat,
                         negative_slope, dropout, add_self_loops, edge_dim,
                         fill_value, bias, residual, **kwargs)
        self._quantize_linears(
            ['lin', 'lin_src', 'lin_dst', 'lin_edge', 'res'], weight_quantizer)
        self._init_quantizers(dict(input=input_quantizer,
                                   attention=attention_quantizer,
                                   message=message_quantizer,
                                   aggregate=aggregate_quantizer,
                                   output=output_quantizer))
        self.reset_parameters()

    @property
    def weight_quantizer(self) -> Optional[Quantizer]:
        # Held by the linear layers, so the state-dict keys stay GATConv's.
        lin = self.lin if self.lin is not None else self.lin_src
        return getattr(lin, 'weight_quantizer', None)

    def reset_parameters(self):
        super().reset_parameters()
        self.reset_quantizers()

    def forward(
        self,
        x: Union[Tensor, OptPairTensor],
        edge_index: Adj,
        edge_attr: OptTensor = None,
        size: Size = None,
        return_attention_weights: Optional[bool] = None,
    ) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]], Tuple[
            Tensor, SparseTensor]]:
        out = self._float_forward(self.quant_input(x), edge_index, edge_attr,
                                  size, return_attention_weights)
        if isinstance(out, Tensor):
            return self.quant('output', out)
        return self.quant('output', out[0]), out[1]

    def edge_update(self, alpha_j: Tensor, alpha_i: OptTensor,
                    edge_attr: OptTensor, index: Tensor, ptr: OptTensor,
                    dim_size: Optional[int]) -> Tensor:
        alpha = alpha_j if alpha_i is None else alpha_j + alpha_i
        if index.numel() == 0:
            return alpha
        if edge_attr is not None and self.lin_edge is not None:
            if edge_attr.dim() == 1:
                edge_attr = edge_attr.view(-1, 1)
            edge_attr = self.lin_edge(edge_attr)
            edge_attr = edge_attr.view(-1, self.heads, self.out_channels)
            alpha = alpha + (edge_attr * self.att_edge).sum(dim=-1)
        alpha = F.leaky_relu(alpha, self.negative_slope)
        alpha = softmax(alpha, index, ptr, dim_size)
        # Before dropout: the grid the deployed (dropout-free) layer uses.
        alpha = self.quant('attention', alpha)
        return F.dropout(alpha, p=self.dropout, training=self.training)

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return self.quant('message', alpha.unsqueeze(-1) * x_j)

    def update(self, inputs: Tensor) -> Tensor:
        return self.quant('aggregate', inputs)

    @classmethod
    def float_kwargs(cls, module: nn.Module) -> dict:
        kwargs = cls.message_passing_kwargs(module)
        del kwargs['node_dim']  # GATConv fixes it to 0
        return dict(in_channels=module.in_channels,
                    out_channels=module.out_channels, heads=module.heads,
                    concat=module.concat,
                    negative_slope=module.negative_slope,
                    dropout=module.dropout,
                    add_self_loops=module.add_self_loops,
                    edge_dim=module.edge_dim, fill_value=module.fill_value,
                    bias=module.bias is not None, residual=module.residual,
                    **kwargs)

    def __repr__(self) -> str:
        extra = self.quant_repr()
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, heads={self.heads}'
                f'{", " + extra if extra else ""})')
