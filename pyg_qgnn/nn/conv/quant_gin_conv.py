import copy
from typing import Callable, Optional

import torch
from torch_geometric.nn.conv import GINConv

from pyg_qgnn.nn.quant_layer import QuantAggregatingLayer, parent_method
from pyg_qgnn.quantizers import Quantizer


class QuantGINConv(QuantAggregatingLayer, GINConv):
    r"""The graph isomorphism operator of `Xu et al.
    <https://arxiv.org/abs/1810.00826>`_ with quantization-aware training
    (fake quantization at input, message, aggregate and output, as in
    `Degree-Quant <https://arxiv.org/abs/2008.05000>`_).

    .. math::
        \mathbf{x}^{\prime}_i = Q_{out}\Big(h_{\mathbf{\Theta}}\Big(
        (1 + \epsilon) \cdot Q_{in}(\mathbf{x}_i) + Q_{agg}\Big(
        \sum_{j \in \mathcal{N}(i)} Q_{msg}\big(Q_{in}(\mathbf{x}_j)\big)
        \Big)\Big)\Big)

    The weights live in the network :math:`h_{\mathbf{\Theta}}`: give it
    :class:`~pyg_qgnn.nn.QuantLinear` layers to quantize them
    (:func:`~pyg_qgnn.quantize_model` converts the linear layers of the
    network of every :class:`GINConv` in a model under the model's scheme).
    Every slot is optional; with none (or all switched off with
    :func:`~pyg_qgnn.quantizers.disable_fake_quant`) the layer equals
    :class:`~torch_geometric.nn.conv.GINConv` numerically and shares its
    state-dict keys. The message quantizer acts on every propagation path:
    for a :class:`torch.sparse.Tensor` or :class:`torch_sparse.SparseTensor`
    adjacency the fused sparse product is replaced by explicit per-edge
    messages while it is on (which, as on the :obj:`edge_index` path, do
    not use the adjacency's values). :func:`torch.jit.script` and
    :func:`torch.compile` work as for :class:`GINConv` (see
    :class:`~pyg_qgnn.nn.QuantLayer` for TorchScript and quantizers).

    Args:
        nn (torch.nn.Module): The network :math:`h_{\mathbf{\Theta}}`
            mapping node features of shape :obj:`[-1, in_channels]` to
            :obj:`[-1, out_channels]`.
        eps (float, optional): (Initial) :math:`\epsilon`-value.
            (default: :obj:`0.`)
        train_eps (bool, optional): Learn :math:`\epsilon`.
            (default: :obj:`False`)
        input_quantizer (Quantizer, optional): :math:`Q_{in}`, applied once
            to each node feature matrix (to each side of a bipartite pair).
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
          or sparse matrix :math:`(|\mathcal{V_t}|, |\mathcal{V_s}|)`
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})` or
          :math:`(|\mathcal{V}_t|, F_{out})` if bipartite
    """
    quant_points = ('input', 'message', 'aggregate', 'output')

    _float_forward = parent_method(GINConv, 'forward')
    _float_message_and_aggregate = parent_method(GINConv,
                                                 'message_and_aggregate')
    _float_aggregate = parent_method(GINConv, 'aggregate')

    def __init__(self, nn: Callable, eps: float = 0., train_eps: bool = False,
                 *, input_quantizer: Optional[Quantizer] = None,
                 message_quantizer: Optional[Quantizer] = None,
                 aggregate_quantizer: Optional[Quantizer] = None,
                 output_quantizer: Optional[Quantizer] = None, **kwargs):
        super().__init__(nn, eps, train_eps, **kwargs)
        # Sums and means run in float64 in evaluation (see exact_sums), not
        # a parametric aggregation, whose weights stay float32.
        self._exact_aggregation = self.aggr in ('add', 'sum', 'mean')
        self._init_quantizers(dict(input=input_quantizer,
                                   message=message_quantizer,
                                   aggregate=aggregate_quantizer,
                                   output=output_quantizer))

    def reset_parameters(self):
        super().reset_parameters()
        self.reset_quantizers()

    @classmethod
    def float_kwargs(cls, module: torch.nn.Module) -> dict:
        return dict(nn=copy.deepcopy(module.nn), eps=module.initial_eps,
                    train_eps=isinstance(module.eps, torch.nn.Parameter),
                    **cls.message_passing_kwargs(module))

    def __repr__(self) -> str:
        extra = self.quant_repr()
        return (f'{self.__class__.__name__}(nn={self.nn}'
                f'{", " + extra if extra else ""})')
