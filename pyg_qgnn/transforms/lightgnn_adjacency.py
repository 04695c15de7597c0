from typing import List, Optional, Union

import torch
from torch import Tensor
from torch_geometric.data import Data, HeteroData
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform
from torch_geometric.typing import EdgeType

from pyg_qgnn.transforms._edges import (
    edge_stores,
    edge_type_list,
    node_counts,
    per_edge_values,
)


def lightgnn_norm(edge_index: Tensor, weight: Optional[Tensor],
                  num_nodes: Union[int, tuple]) -> Tensor:
    r"""The value :math:`w_e / \sqrt{d_{src} \, d_{dst}}` of every edge
    (see :class:`LightGNNAdjacency`); :obj:`num_nodes` is an int for edges
    within one node set (both ends take the in-degree) or
    :obj:`(num_src, num_dst)` for a bipartite graph (out-degree of the
    source, in-degree of the destination). Edges whose ends have degree
    zero get :obj:`0`."""
    src, dst = edge_index[0], edge_index[1]
    if isinstance(num_nodes, tuple):
        deg_src = torch.bincount(src, minlength=num_nodes[0])
        deg_dst = torch.bincount(dst, minlength=num_nodes[1])
    else:
        deg_src = deg_dst = torch.bincount(dst, minlength=num_nodes)
    if weight is None:
        weight = torch.ones(src.numel(), dtype=torch.get_default_dtype(),
                            device=src.device)
    denom = (deg_src[src] * deg_dst[dst]).to(weight.dtype)
    positive = denom > 0
    return torch.where(positive, weight / denom.clamp(min=1).sqrt(),
                       torch.zeros_like(weight))


@functional_transform('lightgnn_adjacency')
class LightGNNAdjacency(BaseTransform):
    r"""Attaches the normalized weighted adjacency of
    `LightGNN <https://arxiv.org/abs/2501.03228>`_ (Eq. 4) to a graph, one
    value per edge (functional name: :obj:`lightgnn_adjacency`):

    .. math::
        \hat{\mathbf{A}} = \mathbf{D}_{\mathcal{U}}^{-1/2}
        (\mathbf{A} \odot \mathbf{W}) \mathbf{D}_{\mathcal{V}}^{-1/2},
        \qquad \hat{a}_e = \frac{w_e}{\sqrt{d_{src(e)} \, d_{dst(e)}}}

    where :math:`\mathbf{W}` holds the edge weights :obj:`data[weight_attr]`
    (all ones when absent: the plain LightGCN normalization) and
    :math:`\mathbf{D}` the *unweighted* degrees of :math:`\mathbf{A}`:
    every edge counts once, so a duplicated edge counts twice, as in
    :func:`~torch_geometric.nn.conv.gcn_conv.gcn_norm`.

    * For a homogeneous :class:`~torch_geometric.data.Data` (or an edge
      type within one node type), :math:`d` is the in-degree
      (:obj:`bincount(edge_index[1])`) for both ends of an edge. The graph
      is expected to be symmetric (each edge in both directions, as
      :meth:`~pyg_qgnn.datasets.RecSysData.graph` builds it), so that the
      in-degree is the degree.
    * For a bipartite edge type :obj:`(src, rel, dst)` of a
      :class:`~torch_geometric.data.HeteroData`, :math:`d_{src}` counts the
      type's edges leaving each source node (:math:`\mathbf{D}_\mathcal{U}`)
      and :math:`d_{dst}` those entering each destination node
      (:math:`\mathbf{D}_\mathcal{V}`).

    Edges at a node of degree zero (an edge whose source has no incoming
    edge in a non-symmetric graph) get :obj:`0`, never NaN or infinity;
    isolated nodes have no edge and hence an empty row.

    Args:
        weight_attr (str, optional): The edge attribute holding
            :math:`\mathbf{W}`, one finite floating-point value per edge;
            absent means all ones. (default: :obj:`"edge_weight"`)
        out_attr (str, optional): The edge attribute the normalized values
            are written to (it may be :obj:`weight_attr`, which is then
            replaced). (default: :obj:`"edge_weight"`)
        edge_types (List[Tuple[str, str, str]], optional): The edge types of
            a :class:`~torch_geometric.data.HeteroData` to normalize; all of
            them if :obj:`None`. (default: :obj:`None`)
    """
    def __init__(self, weight_attr: str = 'edge_weight',
                 out_attr: str = 'edge_weight',
                 edge_types: Optional[List[EdgeType]] = None):
        for name, value in dict(weight_attr=weight_attr,
                                out_attr=out_attr).items():
            if not isinstance(value, str) or not value:
                raise ValueError(f"'{name}' must be a non-empty str (got "
                                 f"{value!r})")
        self.weight_attr = weight_attr
        self.out_attr = out_attr
        self.edge_types = edge_type_list(edge_types)

    def forward(
        self,
        data: Union[Data, HeteroData],
    ) -> Union[Data, HeteroData]:
        values = []  # check every store before writing to any
        for edge_type, store in edge_stores(data, self.edge_types):
            weight = store.get(self.weight_attr, None)
            if weight is not None:
                weight = per_edge_values(weight, store.edge_index.size(1),
                                         self.weight_attr)
            num_nodes = node_counts(data, store, edge_type)
            values.append((store, lightgnn_norm(store.edge_index, weight,
                                                num_nodes)))
        for store, value in values:
            store[self.out_attr] = value
        return data

    def __repr__(self) -> str:
        types = '' if self.edge_types is None else \
            f', edge_types={self.edge_types}'
        return (f'{self.__class__.__name__}(weight_attr={self.weight_attr!r}, '
                f'out_attr={self.out_attr!r}{types})')
