r"""LightGCN with a quantized embedding table: the GNAQ recommender
(`Li et al., CIKM 2025 <https://doi.org/10.1145/3746252.3761244>`_) and the
plain per-node uniform baselines it is compared with."""
import copy
from typing import Optional, Union

import torch
from torch import Tensor, nn
from torch.utils.weak import WeakTensorKeyDictionary
from torch_geometric.nn.models import LightGCN
from torch_geometric.typing import Adj, OptTensor
from torch_geometric.utils import scatter

from pyg_qgnn.nn.conv.quant_lg_conv import QuantLGConv
from pyg_qgnn.quantizers import Quantizer
from pyg_qgnn.quantizers.node_aware import NodeAwareQuantizer


#: Row-normalized pattern D^-1 A of each CSR adjacency seen (Eq. 14 as one
#: sparse product), dropped with the adjacency.
_MEAN_OPERATORS = WeakTensorKeyDictionary()


def neighbour_mean(x: Tensor, adj: Adj) -> Tensor:
    r"""Eq. 14 of GNAQ: :math:`\hat{\mathbf{e}}_i = \frac{1}{|\mathcal{N}_i|}
    \sum_{j \in \mathcal{N}_i} \mathbf{e}_j`, with :math:`\mathcal{N}_i` the
    sources of the edges into :math:`i` (an :obj:`edge_index`
    :math:`(2, |\mathcal{E}|)`, or the nonzeros of row :math:`i` of a
    :obj:`torch.sparse_csr` transposed adjacency); edge weights are
    ignored. A node without neighbours keeps its own row."""
    num_nodes = x.size(0)
    if isinstance(adj, Tensor) and adj.layout == torch.sparse_csr:
        crow = adj.crow_indices()
        degree = crow[1:] - crow[:-1]
        mean = _MEAN_OPERATORS.get(adj)
        if mean is None or mean.dtype != x.dtype:
            row = torch.repeat_interleave(
                torch.arange(num_nodes, device=crow.device), degree)
            weight = 1.0 / degree.clamp(min=1).to(x.dtype)
            mean = torch.sparse_csr_tensor(crow, adj.col_indices(),
                                           weight[row], adj.shape)
            _MEAN_OPERATORS[adj] = mean
        mean = mean @ x
    elif isinstance(adj, Tensor) and adj.dim() == 2 and adj.size(0) == 2 \
            and not adj.is_floating_point():
        col, row = adj[0], adj[1]
        degree = torch.bincount(row, minlength=num_nodes)
        total = scatter(x[col], row, dim=0, dim_size=num_nodes, reduce='sum')
        mean = total / degree.clamp(min=1).view(-1, 1).to(x.dtype)
    else:
        raise TypeError(f"'adj' must be an edge_index (2, E) or a "
                        f"torch.sparse_csr matrix (got "
                        f"{type(adj).__name__})")
    return torch.where((degree > 0).view(-1, 1), mean, x)


class QuantLightGCN(LightGCN):
    r""":class:`torch_geometric.nn.models.LightGCN` whose embedding table
    is quantized by :obj:`embedding_quantizer` and propagated by
    :class:`~pyg_qgnn.nn.QuantLGConv` layers.

    .. math::
        \mathbf{H}^{(0)} = Q(\mathbf{E}),\quad
        \mathbf{H}^{(l+1)} = \mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}
        \mathbf{H}^{(l)},\quad \mathbf{H} = \sum_{l=0}^{L} \alpha_l
        \mathbf{H}^{(l)}

    With a :class:`~pyg_qgnn.quantizers.NodeAwareQuantizer` this is GNAQ:
    :math:`Q(\mathbf{E})` is the node-aware quantized table
    :math:`\hat{\mathbf{E}}` (or the extended encoding
    :math:`[\hat{\mathbf{E}}, \mathbf{S}]` of Eq. 11 with
    :obj:`append_levels`; scores are dot products of the propagated
    encodings, Eq. 12-13), and :meth:`after_step` re-assigns the codes
    after every optimizer step, from each node's float encoding blended
    with its neighbours' mean by the relation-aware update (RAU, Eq. 14).
    With an :class:`~pyg_qgnn.quantizers.IntegerQuantizer` of
    :obj:`granularity="node"` it is the plain per-node uniform baseline
    (LSQ with :obj:`grad="lsq"`). Without a quantizer it equals
    :class:`LightGCN`, with the same state-dict keys plus the quantizer's.

    Args:
        num_nodes (int): Users plus items.
        embedding_dim (int): :math:`d`.
        num_layers (int): :math:`L`.
        alpha (float or torch.Tensor, optional): Layer weights, see
            :class:`LightGCN`. (default: :math:`1/(L+1)`)
        embedding_quantizer (Quantizer, optional): :math:`Q`.
            (default: :obj:`None`)
        **kwargs (optional): Arguments of the :class:`QuantLGConv` layers.
    """
    def __init__(self, num_nodes: int, embedding_dim: int, num_layers: int,
                 alpha: Optional[Union[float, Tensor]] = None, *,
                 embedding_quantizer: Optional[Quantizer] = None, **kwargs):
        super().__init__(num_nodes, embedding_dim, num_layers, alpha,
                         **kwargs)
        self.convs = nn.ModuleList(QuantLGConv(**kwargs)
                                   for _ in range(num_layers))
        if embedding_quantizer is not None and \
                not isinstance(embedding_quantizer, Quantizer):
            raise TypeError(f"'embedding_quantizer' must be a Quantizer or "
                            f"None (got {type(embedding_quantizer).__name__})")
        self.embedding_quantizer = embedding_quantizer

    @classmethod
    def from_float(cls, model: LightGCN,
                   embedding_quantizer: Optional[Quantizer] = None
                   ) -> 'QuantLightGCN':
        r"""The quantized twin of a trained :obj:`model`: its embeddings
        (which initialize a node-aware quantizer's codes and levels), layer
        weights and layer settings."""
        if not isinstance(model, LightGCN):
            raise TypeError(f"'model' must be a LightGCN (got "
                            f"{type(model).__name__})")
        conv = model.convs[0] if len(model.convs) else None
        kwargs = {} if conv is None else dict(
            normalize=conv.normalize, **QuantLGConv.message_passing_kwargs(
                conv))
        twin = cls(model.num_nodes, model.embedding_dim, model.num_layers,
                   model.alpha.clone(), **kwargs)
        twin.load_state_dict(model.state_dict())
        twin = twin.to(model.embedding.weight.device)
        quantizer = copy.deepcopy(embedding_quantizer)
        if isinstance(quantizer, NodeAwareQuantizer):
            quantizer.initialize(twin.embedding.weight)
        twin.embedding_quantizer = quantizer
        twin.train(model.training)
        return twin

    def layer0(self) -> Tensor:
        r""":math:`\mathbf{H}^{(0)}`, the input of message passing."""
        x = self.embedding.weight
        quantizer = self.embedding_quantizer
        if isinstance(quantizer, NodeAwareQuantizer):
            return quantizer.extended(x)
        return x if quantizer is None else quantizer(x)

    def ego_embedding(self, index: Tensor) -> Tensor:
        r"""Rows :obj:`index` of :math:`\mathbf{H}^{(0)}`, what BPR's L2
        term regularizes."""
        return self.layer0()[index]

    def get_embedding(self, edge_index: Adj,
                      edge_weight: OptTensor = None) -> Tensor:
        x = self.layer0()
        out = x * self.alpha[0]
        for i in range(self.num_layers):
            x = self.convs[i](x, edge_index, edge_weight)
            out = out + x * self.alpha[i + 1]
        return out

    @torch.no_grad()
    def after_step(self, adj: Adj):
        r"""GNAQ's code update after an optimizer step (a no-op for other
        quantizers): codes are re-assigned under the boundaries of the
        updated levels to each node's float encoding, with RAU blended with
        its neighbours' mean, :math:`(1 - \mu)\mathbf{e}_i + \mu\,
        \mathrm{mean}_{j \in \mathcal{N}_i} \mathbf{e}_j` (Eq. 14 at
        :math:`\mu = 1`)."""
        quantizer = self.embedding_quantizer
        if not isinstance(quantizer, NodeAwareQuantizer):
            return
        source = self.embedding.weight
        if quantizer.relation_aware:
            weight = quantizer.relation_weight
            source = torch.lerp(source, neighbour_mean(source, adj), weight)
        quantizer.update_codes_(source)

    def __repr__(self) -> str:
        quantizer = '' if self.embedding_quantizer is None else \
            f', embedding_quantizer={self.embedding_quantizer}'
        return (f'{self.__class__.__name__}({self.num_nodes}, '
                f'{self.embedding_dim}, num_layers={self.num_layers}'
                f'{quantizer})')
