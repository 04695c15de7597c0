from typing import List, Optional, Tuple, Union

from torch import nn
from torch_geometric.nn.aggr import Aggregation
from torch_geometric.nn.conv import SAGEConv

from pyg_qgnn.nn.quant_layer import (
    QUANT_POINTS,
    QuantAggregatingLayer,
    parent_method,
)
from pyg_qgnn.quantizers import Quantizer


class QuantSAGEConv(QuantAggregatingLayer, SAGEConv):
    r"""The GraphSAGE operator of `Hamilton et al.
    <https://arxiv.org/abs/1706.02216>`_ with quantization-aware training
    (fake quantization at input, weight, message, aggregate and output, as
    in `Degree-Quant <https://arxiv.org/abs/2008.05000>`_).

    .. math::
        \mathbf{x}^{\prime}_i = Q_{out}\Big(Q_{w}(\mathbf{W}_1)\,
        Q_{in}(\mathbf{x}_i) + Q_{w}(\mathbf{W}_2)\, Q_{agg}\Big(
        \mathrm{mean}_{j \in \mathcal{N}(i)}\, Q_{msg}\big(
        Q_{in}(\mathbf{x}_j)\big)\Big) + \mathbf{b}\Big)

    With :obj:`project=True` the neighbours are first projected,
    :math:`\mathbf{x}_j \leftarrow \mathrm{ReLU}(Q_{w}(\mathbf{W}_3)
    Q_{in}(\mathbf{x}_j) + \mathbf{b}_3)`, before :math:`Q_{msg}`; with
    :obj:`normalize=True`, :math:`Q_{out}` acts on the
    :math:`\ell_2`-normalized output. Each of
    :math:`\mathbf{W}_1, \mathbf{W}_2, \mathbf{W}_3` is fake-quantized with a
    range of its own.

    Every slot is optional; with none (or all switched off with
    :func:`~pyg_qgnn.quantizers.disable_fake_quant`) the layer equals
    :class:`~torch_geometric.nn.conv.SAGEConv` numerically and shares its
    state-dict keys. The message quantizer acts on every propagation path:
    for a :class:`torch.sparse.Tensor` or :class:`torch_sparse.SparseTensor`
    adjacency the fused sparse product is replaced by explicit per-edge
    messages while it is on (which, as on the :obj:`edge_index` path, do
    not use the adjacency's values). :func:`torch.jit.script` and
    :func:`torch.compile` work as for :class:`SAGEConv` (see
    :class:`~pyg_qgnn.nn.QuantLayer` for TorchScript and quantizers).

    Args:
        in_channels (int or tuple): Size of each input sample, :obj:`-1`,
            or the sizes of source and target features.
        out_channels (int): Size of each output sample.
        aggr (str or Aggregation, optional): See :class:`SAGEConv`.
            (default: :obj:`"mean"`)
        normalize (bool, optional): See :class:`SAGEConv`.
            (default: :obj:`False`)
        root_weight (bool, optional): See :class:`SAGEConv`.
            (default: :obj:`True`)
        project (bool, optional): See :class:`SAGEConv`.
            (default: :obj:`False`)
        bias (bool, optional): See :class:`SAGEConv`. (default: :obj:`True`)
        input_quantizer (Quantizer, optional): :math:`Q_{in}`, applied once
            to each node feature matrix (to each side of a bipartite pair).
            (default: :obj:`None`)
        weight_quantizer (Quantizer, optional): :math:`Q_{w}`, held by
            :obj:`self.lin_l`; :obj:`self.lin_r` and :obj:`self.lin` hold
            copies. (default: :obj:`None`)
        message_quantizer (Quantizer, optional): :math:`Q_{msg}`.
            (default: :obj:`None`)
        aggregate_quantizer (Quantizer, optional): :math:`Q_{agg}`.
            (default: :obj:`None`)
        output_quantizer (Quantizer, optional): :math:`Q_{out}`.
            (default: :obj:`None`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **inputs:**
          node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V_s}|, F_{s}), (|\mathcal{V_t}|, F_{t}))`
          if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)`
          or sparse matrix :math:`(|\mathcal{V_t}|, |\mathcal{V_s}|)`
        - **outputs:** node features :math:`(|\mathcal{V}|, F_{out})` or
          :math:`(|\mathcal{V_t}|, F_{out})` if bipartite
    """
    quant_points = QUANT_POINTS

    _float_forward = parent_method(SAGEConv, 'forward')
    _float_message_and_aggregate = parent_method(SAGEConv,
                                                 'message_and_aggregate')
    _float_aggregate = parent_method(SAGEConv, 'aggregate')

    def __init__(
        self,
        in_channels: Union[int, Tuple[int, int]],
        out_channels: int,
        aggr: Optional[Union[str, List[str], Aggregation]] = 'mean',
        normalize: bool = False,
        root_weight: bool = True,
        project: bool = False,
        bias: bool = True,
        *,
        input_quantizer: Optional[Quantizer] = None,
        weight_quantizer: Optional[Quantizer] = None,
        message_quantizer: Optional[Quantizer] = None,
        aggregate_quantizer: Optional[Quantizer] = None,
        output_quantizer: Optional[Quantizer] = None,
        **kwargs,
    ):
        super().__init__(in_channels, out_channels, aggr, normalize,
                         root_weight, project, bias, **kwargs)
        # Sums and means run in float64 in evaluation (see exact_sums), not
        # a parametric aggregation (LSTM), whose weights stay float32.
        self._exact_aggregation = self.aggr in ('add', 'sum', 'mean')
        self._quantize_linears(['lin_l', 'lin_r', 'lin'], weight_quantizer)
        self._init_quantizers(dict(input=input_quantizer,
                                   message=message_quantizer,
                                   aggregate=aggregate_quantizer,
                                   output=output_quantizer))
        self.reset_parameters()

    @property
    def weight_quantizer(self) -> Optional[Quantizer]:
        # Held by self.lin_l, so the state-dict keys stay those of SAGEConv.
        return getattr(self.lin_l, 'weight_quantizer', None)

    def reset_parameters(self):
        super().reset_parameters()
        self.reset_quantizers()

    @classmethod
    def float_kwargs(cls, module: nn.Module) -> dict:
        return dict(in_channels=module.in_channels,
                    out_channels=module.out_channels,
                    normalize=module.normalize,
                    root_weight=module.root_weight, project=module.project,
                    bias=module.lin_l.bias is not None,
                    **cls.message_passing_kwargs(module))

    def __repr__(self) -> str:
        extra = self.quant_repr()
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, aggr={self.aggr}'
                f'{", " + extra if extra else ""})')
