from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.weak import WeakTensorKeyDictionary
from torch_geometric.nn.conv import LGConv
from torch_geometric.typing import Adj, OptTensor

from pyg_qgnn.nn.quant_layer import QuantLayer, parent_method
from pyg_qgnn.quantizers import Quantizer
from pyg_qgnn.quantizers.node_aware import NodeAwareQuantizer


class _SparseProduct(torch.autograd.Function):
    # torch.sparse.mm transposes a CSR matrix on every backward pass, which
    # costs more than the product itself; the transpose is kept instead.
    @staticmethod
    def forward(ctx, adj_t: Tensor, adj: Tensor, x: Tensor) -> Tensor:
        ctx.adj = adj
        return adj_t @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, None, ctx.adj @ grad


#: Transposes of the adjacency matrices seen, dropped with the matrices.
_TRANSPOSES = WeakTensorKeyDictionary()


def sparse_propagate(adj_t: Tensor, x: Tensor) -> Tensor:
    r""":math:`\mathbf{A}^{\top} \mathbf{X}` for a :obj:`torch.sparse_csr`
    matrix :obj:`adj_t` (the transposed adjacency), with a backward pass
    that reuses the transposed matrix, computed once per adjacency."""
    if not x.requires_grad:
        return adj_t @ x
    transpose = _TRANSPOSES.get(adj_t)
    if transpose is None:
        transpose = adj_t.to_sparse_coo().t().coalesce().to_sparse_csr()
        _TRANSPOSES[adj_t] = transpose
    return _SparseProduct.apply(adj_t, transpose, x)


class QuantLGConv(QuantLayer, LGConv):
    r"""The light graph convolution of `LightGCN
    <https://arxiv.org/abs/2002.02126>`_ that propagates quantized node
    embeddings, as in `GNAQ <https://doi.org/10.1145/3746252.3761244>`_.

    .. math::
        \mathbf{x}^{\prime}_i = Q_{out}\Big(Q_{agg}\Big(\sum_{j \in
        \mathcal{N}(i)} Q_{msg}\Big(\frac{e_{j,i}}{\sqrt{\deg(i)\deg(j)}}
        Q_{in}(\mathbf{X})_j\Big)\Big)\Big)

    With a :class:`~pyg_qgnn.quantizers.NodeAwareQuantizer` as
    :math:`Q_{in}` (the input is then the float embedding table, one row per
    node) the layer propagates GNAQ's encoding :math:`\hat{\mathbf{E}}`, or
    :math:`[\hat{\mathbf{E}}, \mathbf{S}]` (Eq. 11-12) with
    :obj:`append_levels`, when its output has :math:`d + 2^b` channels; any
    other
    :class:`~pyg_qgnn.quantizers.Quantizer` (e.g. an
    :class:`~pyg_qgnn.quantizers.IntegerQuantizer`) acts elementwise. With
    no quantizer the layer equals :class:`~torch_geometric.nn.conv.LGConv`
    numerically. For a :obj:`torch.sparse_csr` adjacency its backward pass
    reuses a cached transpose (:func:`sparse_propagate`), several times
    faster than :func:`torch.sparse.mm`'s on a CPU; while :math:`Q_{msg}` is
    on, per-edge messages replace the fused product.

    Args:
        normalize (bool, optional): Symmetric normalization, see
            :class:`LGConv`. (default: :obj:`True`)
        input_quantizer (Quantizer, optional): :math:`Q_{in}`.
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
          node features :math:`(|\mathcal{V}|, F)`,
          edge indices :math:`(2, |\mathcal{E}|)` or sparse matrix
          :math:`(|\mathcal{V}|, |\mathcal{V}|)`,
          edge weights :math:`(|\mathcal{E}|)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, F)`, or
          :math:`(|\mathcal{V}|, F + 2^b)` with a node-aware :math:`Q_{in}`
          appending its levels
    """
    quant_points = ('input', 'message', 'aggregate', 'output')

    _float_forward = parent_method(LGConv, 'forward')
    _float_message = parent_method(LGConv, 'message')
    _float_message_and_aggregate = parent_method(LGConv,
                                                 'message_and_aggregate')

    def __init__(self, normalize: bool = True, *,
                 input_quantizer: Optional[Quantizer] = None,
                 message_quantizer: Optional[Quantizer] = None,
                 aggregate_quantizer: Optional[Quantizer] = None,
                 output_quantizer: Optional[Quantizer] = None, **kwargs):
        super().__init__(normalize, **kwargs)
        self._init_quantizers(dict(input=input_quantizer,
                                   message=message_quantizer,
                                   aggregate=aggregate_quantizer,
                                   output=output_quantizer))

    def reset_parameters(self):
        super().reset_parameters()
        self.reset_quantizers()

    def quant_input(self, x: Tensor) -> Tensor:
        r""":math:`Q_{in}(\mathbf{X})`: for a node-aware quantizer, the
        extended encoding it propagates."""
        if not torch.jit.is_scripting():
            quantizer = getattr(self, 'input_quantizer', None)
            if isinstance(quantizer, NodeAwareQuantizer):
                return quantizer.extended(x)
        return self.quant('input', x)

    def forward(self, x: Tensor, edge_index: Adj,
                edge_weight: OptTensor = None) -> Tensor:
        out = self._float_forward(self.quant_input(x), edge_index,
                                  edge_weight)
        return self.quant('output', out)

    def message(self, x_j: Tensor, edge_weight: OptTensor) -> Tensor:
        return self.quant('message', self._float_message(x_j, edge_weight))

    def message_and_aggregate(self, adj_t: Adj, x: Tensor) -> Tensor:
        if self.quantizes_messages():
            # A fused product never forms the messages Q_msg acts on.
            edge_index, value, num_targets = self.sparse_edges(adj_t)
            x_j = x.index_select(self.node_dim, edge_index[1])
            return self.aggregate(self.message(x_j, value), edge_index[0],
                                  dim_size=num_targets)
        if not torch.jit.is_scripting() and isinstance(adj_t, Tensor) \
                and adj_t.layout == torch.sparse_csr:
            return sparse_propagate(adj_t, x)
        return self._float_message_and_aggregate(adj_t, x)

    def update(self, inputs: Tensor) -> Tensor:
        return self.quant('aggregate', inputs)

    @classmethod
    def float_kwargs(cls, module: nn.Module) -> dict:
        return dict(normalize=module.normalize,
                    **cls.message_passing_kwargs(module))

    def __repr__(self) -> str:
        extra = self.quant_repr()
        return (f'{self.__class__.__name__}(normalize={self.normalize}'
                f'{", " + extra if extra else ""})')
