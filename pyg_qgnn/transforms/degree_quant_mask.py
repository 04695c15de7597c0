from typing import Optional, Union

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary
from torch_geometric.data import Batch, Data, HeteroData
from torch_geometric.transforms import BaseTransform, Compose
from torch_geometric.typing import Adj
from torch_geometric.utils import is_sparse, to_edge_index

from pyg_qgnn.quantizers.degree_quant import (
    check_probabilities,
    protection_probability,
)

#: Protection probabilities per graph object (an edge_index tensor or sparse
#: adjacency), dropped with it: {graph: {key: (version, num_nodes, prob)}}.
_PROBABILITIES = WeakIdKeyDictionary()
_ATTACHED = 'attached'


def edge_targets(edge_index: Adj, flow: str = 'source_to_target') -> Tensor:
    r"""The node each edge ends in: :obj:`edge_index[1]` for
    :obj:`flow="source_to_target"`, :obj:`edge_index[0]` otherwise, the row
    of each entry of a sparse :obj:`adj_t` (in
    :func:`~torch_geometric.utils.to_edge_index` order)."""
    if flow not in ('source_to_target', 'target_to_source'):
        raise ValueError(f"'flow' must be 'source_to_target' or "
                         f"'target_to_source' (got {flow!r})")
    if is_sparse(edge_index):
        return to_edge_index(edge_index)[0][0]
    return edge_index[1 if flow == 'source_to_target' else 0]


def in_degree(edge_index: Adj, num_nodes: Optional[int] = None,
              flow: str = 'source_to_target') -> Tensor:
    r"""The in-degree of every node: the number of edges that end in it, see
    :func:`edge_targets`."""
    targets = edge_targets(edge_index, flow)
    if num_nodes is None and is_sparse(edge_index):
        num_nodes = edge_index.size(0)
    if num_nodes is None:
        num_nodes = int(targets.max()) + 1 if targets.numel() else 0
    return torch.bincount(targets, minlength=num_nodes)[:num_nodes]


def _remember(graph, key, num_nodes: int, prob: Tensor):
    try:
        entries = _PROBABILITIES.setdefault(graph, {})
    except TypeError:  # an object that takes no weak reference: no caching
        return
    entries[key] = (getattr(graph, '_version', None), num_nodes, prob)


def _recall(graph, key, num_nodes: int) -> Optional[Tensor]:
    try:
        entry = _PROBABILITIES.get(graph, {}).get(key)
    except TypeError:
        return None
    if entry is None:
        return None
    version, size, prob = entry
    if version != getattr(graph, '_version', None) or size != num_nodes:
        return None  # modified in place, or read with another node count
    return prob


def attach_protection_probability(edge_index: Adj, prob: Tensor):
    r"""Declares :obj:`prob` the protection probabilities of the graph
    :obj:`edge_index` (same object), for every Degree-Quant layer that sees
    it; :class:`DegreeQuantMask` does this for the graphs it transforms."""
    if not isinstance(prob, Tensor) or prob.dim() != 1:
        raise TypeError("'prob' must be a one-dimensional tensor")
    _remember(edge_index, _ATTACHED, prob.numel(), prob)


def graph_protection_probability(edge_index: Adj,
                                 num_nodes: Optional[int] = None,
                                 p_min: float = 0.0, p_max: float = 0.1,
                                 flow: str = 'source_to_target') -> Tensor:
    r"""The Degree-Quant protection probability of every node of a graph,
    :func:`~pyg_qgnn.quantizers.protection_probability` of its in-degrees,
    computed once per graph object and cached by its identity. Probabilities
    attached to the graph (:func:`attach_protection_probability`) take
    precedence.
    """
    if num_nodes is None:
        num_nodes = in_degree(edge_index, flow=flow).numel()
    attached = _recall(edge_index, _ATTACHED, num_nodes)
    if attached is not None:
        return attached
    key = (flow, p_min, p_max)
    prob = _recall(edge_index, key, num_nodes)
    if prob is None:
        prob = protection_probability(in_degree(edge_index, num_nodes, flow),
                                      p_min, p_max)
        _remember(edge_index, key, num_nodes, prob)
    return prob


class DegreeQuantMask(BaseTransform):
    r"""Attaches `Degree-Quant <https://arxiv.org/abs/2008.05000>`_
    protection probabilities to a graph as :obj:`data.degree_quant_prob`
    :math:`(N)`, so that layers quantized with
    :class:`~pyg_qgnn.quantize.DegreeQuant` need not compute them.

    .. math::
        p_i = p_{min} + (p_{max} - p_{min})\,
        \frac{|\{j : d_j \le d_i\}|}{n}

    with in-degrees :math:`d` ranked within each graph (each graph of a
    :class:`~torch_geometric.data.Batch` on its own). Integer or boolean node
    features are cast to the default float dtype, which quantizers need.

    A model called with the :class:`~torch_geometric.data.Data` or
    :class:`~torch_geometric.data.Batch` object itself (:obj:`model(data)`)
    uses these probabilities; so does any layer called with this
    :obj:`data.edge_index` tensor. Other graphs (say a new batch built by a
    loader, passed as :obj:`model(batch.x, batch.edge_index)`) get theirs
    computed by the layers from the graph they see.

    Args:
        p_min (float, optional): Protection probability of the lowest
            in-degree. (default: :obj:`0.0`)
        p_max (float, optional): Protection probability of the highest
            in-degree. (default: :obj:`0.1`)
    """
    def __init__(self, p_min: float = 0.0, p_max: float = 0.1):
        check_probabilities(p_min, p_max)
        self.p_min = p_min
        self.p_max = p_max

    def forward(self, data: Union[Data, HeteroData]) -> Data:
        if isinstance(data, HeteroData):
            raise TypeError("'data' must be a homogeneous graph (Data or "
                            "Batch); DegreeQuantMask does not handle "
                            "HeteroData")
        if data.x is not None and not data.x.is_floating_point():
            data.x = data.x.to(torch.get_default_dtype())
        graph = data.adj_t if 'adj_t' in data else data.edge_index
        if graph is None:
            raise ValueError("'data' has neither 'edge_index' nor 'adj_t'")
        batch = data.batch if isinstance(data, Batch) else None
        prob = protection_probability(in_degree(graph, data.num_nodes),
                                      self.p_min, self.p_max, batch)
        data.degree_quant_prob = prob
        attach_protection_probability(graph, prob)
        return data

    def add_to(self, dataset):
        r"""Appends this transform to :obj:`dataset.transform`, which may be
        :obj:`None`, and returns :obj:`dataset`."""
        current = dataset.transform
        dataset.transform = self if current is None else Compose(
            [current, self])
        return dataset

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(p_min={self.p_min}, '
                f'p_max={self.p_max})')
