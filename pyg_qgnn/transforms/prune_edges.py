import numbers
import warnings
from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Data, HeteroData
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform
from torch_geometric.typing import EdgeType
from torch_geometric.utils import is_undirected

from pyg_qgnn.transforms._edges import (
    NumNodes,
    check_int,
    edge_stores,
    edge_type_list,
    node_counts,
    per_edge_values,
    ranks_within_groups,
)


def _check_ratio(ratio):
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) \
            or not 0 <= ratio < 1:
        raise ValueError(f"'ratio' must be in [0, 1) (got {ratio!r})")


def _units(edge_index: Tensor, num_nodes: int,
           undirected: bool) -> Tuple[Tensor, int]:
    r"""The unit (what is kept or dropped as a whole) of every edge and the
    number of units, numbered in order of their first edge: each edge, or
    with :obj:`undirected` the :math:`k`-th copy of :math:`(i, j)` paired
    with the :math:`k`-th copy of :math:`(j, i)`."""
    num_edges = edge_index.size(1)
    position = torch.arange(num_edges, device=edge_index.device)
    if not undirected:
        return position, num_edges
    src, dst = edge_index
    low, high = torch.minimum(src, dst), torch.maximum(src, dst)
    key = low * num_nodes + high
    copy = ranks_within_groups(key * 2 + (src > dst).long(),
                               torch.zeros(num_edges, device=src.device))
    perm = torch.sort(copy, stable=True).indices
    perm = perm[torch.sort(key[perm], stable=True).indices]
    new = (key[perm][1:] != key[perm][:-1]) | (copy[perm][1:] !=
                                               copy[perm][:-1])
    unit = torch.empty_like(position)
    unit[perm] = torch.cat([new.new_zeros(1), new]).long().cumsum(0)
    num_units = int(unit.max()) + 1 if num_edges else 0
    first = torch.full((num_units, ), num_edges, device=src.device)
    first = first.scatter_reduce(0, unit, position, 'amin')
    relabel = torch.empty_like(first)
    relabel[torch.sort(first).indices] = torch.arange(
        num_units, device=src.device)
    return relabel[unit], num_units


def prune_edges_mask(score: Tensor, ratio: float, edge_index: Tensor,
                     num_nodes: NumNodes, min_degree: int = 0,
                     undirected: bool = False) -> Tensor:
    r"""The boolean keep mask :math:`(E)` of :class:`PruneEdges`: drops
    :obj:`round(ratio * E)` edges of lowest :math:`|score|` (ties: the
    later edge is dropped first), never one of the :obj:`min_degree`
    highest-:math:`|score|` edges of any node.

    Args:
        score (torch.Tensor): One finite score per edge; its absolute value
            is used.
        ratio (float): The share :math:`\rho \in [0, 1)` of edges to drop.
        edge_index (torch.Tensor): The edges :math:`(2, E)`.
        num_nodes (int or Tuple[int, int]): The number of nodes, or
            :obj:`(num_src_nodes, num_dst_nodes)` for a bipartite graph
            (source and destination ids are then distinct nodes).
        min_degree (int, optional): Edges protected per node.
            (default: :obj:`0`)
        undirected (bool, optional): Keep or drop :math:`(i, j)` and
            :math:`(j, i)` together, scored by the mean of their two
            :math:`|score|`; :math:`\rho` is then a share of such pairs.
            (default: :obj:`False`)
    """
    _check_ratio(ratio)
    check_int('min_degree', min_degree, 0)
    num_edges = edge_index.size(1)
    if not score.is_floating_point():
        score = score.to(torch.get_default_dtype())
    score = per_edge_values(score, num_edges, 'score').abs()
    bipartite = isinstance(num_nodes, tuple)
    if bipartite and undirected:
        raise ValueError("'undirected' must be False for a bipartite graph "
                         "('num_nodes' given as a pair)")
    unit, num_units = _units(edge_index, num_nodes, bool(undirected))
    count = torch.bincount(unit, minlength=num_units)
    unit_score = torch.zeros(num_units, dtype=score.dtype,
                             device=score.device).index_add_(0, unit, score)
    unit_score = unit_score / count.clamp(min=1)

    protected = torch.zeros(num_units, dtype=torch.bool, device=unit.device)
    if min_degree > 0 and num_units > 0:
        src, dst = edge_index[0], edge_index[1]
        if bipartite:
            dst = dst + num_nodes[0]
        ends = torch.empty((2, num_units), dtype=src.dtype, device=src.device)
        ends[0, unit], ends[1, unit] = src, dst
        units = torch.arange(num_units, device=unit.device)
        two = ends[0] != ends[1]  # a self loop counts once at its node
        members = torch.cat([units, units[two]])
        nodes = torch.cat([ends[0], ends[1, two]])
        order = torch.sort(members, stable=True).indices
        members, nodes = members[order], nodes[order]
        rank = ranks_within_groups(nodes, unit_score[members])
        protected[members[rank < min_degree]] = True

    num_drop = round(float(ratio) * num_units)
    candidates = (~protected).nonzero().view(-1)
    if num_drop > candidates.numel():
        what = 'undirected edges' if undirected else 'edges'
        warnings.warn(f"min_degree={min_degree} protects "
                      f"{num_units - candidates.numel()} of {num_units} "
                      f"{what}: dropping {candidates.numel()} instead of "
                      f"{num_drop} ({num_drop - candidates.numel()} fewer) "
                      f"for ratio={ratio}")
        num_drop = candidates.numel()
    # One total order, best first: descending |score|, then position.
    order = torch.sort(unit_score[candidates], descending=True,
                       stable=True).indices
    keep = torch.ones(num_units, dtype=torch.bool, device=unit.device)
    keep[candidates[order[candidates.numel() - num_drop:]]] = False
    return keep[unit]


@functional_transform('prune_edges')
class PruneEdges(BaseTransform):
    r"""Drops the least important edges of a graph, as the edge pruning of
    `LightGNN <https://arxiv.org/abs/2501.03228>`_ does (functional name:
    :obj:`prune_edges`): the share :math:`\rho` (:obj:`ratio`) of edges
    with the lowest :math:`|s_e|` is removed,

    .. math::
        \mathcal{E}' = \mathcal{E} \setminus \operatorname{arg\,bottom}_{
        \operatorname{round}(\rho |\mathcal{E}|)} \{ |s_e| : e \in
        \mathcal{E}, e \text{ not protected} \}

    exactly :obj:`round(ratio * E)` edges (Python's :func:`round`, half to
    even), ties broken by position (of equal scores, the later edge goes
    first). With :obj:`min_degree` :math:`k > 0`, the :math:`k` edges of
    highest :math:`|s_e|` at every node (ties: the earlier edge) are
    protected: each edge counts at both its source and its target (once
    for a self loop), so a node of degree :math:`\geq k` keeps at least
    :math:`k` edges. The count to drop is still taken over all edges; when
    fewer unprotected edges exist, all of them are dropped and a warning
    says how many fewer than asked.

    With :obj:`undirected`, the :math:`k`-th copy of :math:`(i, j)` and the
    :math:`k`-th copy of :math:`(j, i)` form one undirected edge, kept or
    dropped together and scored by the **mean** of their two
    :math:`|s_e|`; :math:`\rho` and :obj:`min_degree` then count such
    pairs (an edge without a reverse partner, such as a self loop, is a
    pair on its own).

    Edges are removed with :meth:`~torch_geometric.data.Data.edge_subgraph`,
    which carries every edge attribute along (as PyG decides which
    attributes are per-edge) and leaves the nodes unchanged. Each edge type
    of a :class:`~torch_geometric.data.HeteroData` is pruned on its own:
    add reverse edge types after pruning (*e.g.*, with
    :class:`~torch_geometric.transforms.ToUndirected`) so that both
    directions agree. See :func:`prune_edges_mask` for the mask itself.

    Args:
        ratio (float): The share :math:`\rho \in [0, 1)` of edges to
            **drop**.
        score (str or callable, optional): :obj:`"weight"`
            (:math:`|` :obj:`data[score_attr]` :math:`|`), :obj:`"random"`
            (uniform scores), or a callable taking the edge store
            (:class:`~torch_geometric.data.Data` or a
            :class:`~torch_geometric.data.HeteroData` edge store) and
            returning one score per edge. (default: :obj:`"weight"`)
        min_degree (int, optional): Edges kept per node at least.
            (default: :obj:`0`)
        score_attr (str, optional): The edge attribute read by
            :obj:`score="weight"`. (default: :obj:`"edge_weight"`)
        undirected (bool, optional): Treat :math:`(i, j)` and
            :math:`(j, i)` as one edge; detected with
            :func:`~torch_geometric.utils.is_undirected` if :obj:`None`.
            Bipartite edge types are always directed.
            (default: :obj:`None`)
        seed (int, optional): Seeds the generator of :obj:`score="random"`
            once, when the transform is built (two transforms with one seed
            prune alike; successive calls draw new scores). If :obj:`None`,
            PyTorch's global generator is used. (default: :obj:`None`)
        edge_types (List[Tuple[str, str, str]], optional): The edge types of
            a :class:`~torch_geometric.data.HeteroData` to prune; all of them
            if :obj:`None`. (default: :obj:`None`)
    """
    def __init__(self, ratio: float,
                 score: Union[str, Callable[..., Tensor]] = 'weight',
                 min_degree: int = 0, score_attr: str = 'edge_weight',
                 undirected: Optional[bool] = None,
                 seed: Optional[int] = None,
                 edge_types: Optional[List[EdgeType]] = None):
        _check_ratio(ratio)
        check_int('min_degree', min_degree, 0)
        if not callable(score) and score not in ('weight', 'random'):
            raise ValueError(f"'score' must be 'weight', 'random' or a "
                             f"callable (got {score!r})")
        if not isinstance(score_attr, str) or not score_attr:
            raise ValueError(f"'score_attr' must be a non-empty str (got "
                             f"{score_attr!r})")
        if undirected not in (None, True, False):
            raise ValueError(f"'undirected' must be None, True or False "
                             f"(got {undirected!r})")
        check_int('seed', seed, 0, allow_none=True)
        self.ratio = ratio
        self.score = score
        self.min_degree = min_degree
        self.score_attr = score_attr
        self.undirected = undirected
        self.seed = seed
        self.edge_types = edge_type_list(edge_types)
        self._generator = None if seed is None else \
            torch.Generator().manual_seed(seed)

    def _scores(self, store) -> Tensor:
        num_edges = store.edge_index.size(1)
        if self.score == 'weight':
            if store.get(self.score_attr, None) is None:
                raise ValueError(f"score='weight' needs the edge attribute "
                                 f"'{self.score_attr}' ('score_attr'), "
                                 f"which the graph lacks")
            return per_edge_values(store[self.score_attr], num_edges,
                                   self.score_attr)
        if self.score == 'random':
            return torch.rand(num_edges, generator=self._generator).to(
                store.edge_index.device)
        score = self.score(store)
        if isinstance(score, Tensor) and not score.is_floating_point():
            score = score.to(torch.get_default_dtype())
        return per_edge_values(score, num_edges, 'score')

    def forward(
        self,
        data: Union[Data, HeteroData],
    ) -> Union[Data, HeteroData]:
        masks = {}
        for edge_type, store in edge_stores(data, self.edge_types):
            num_nodes = node_counts(data, store, edge_type)
            undirected = self.undirected
            if isinstance(num_nodes, tuple):
                if undirected:
                    raise ValueError(f"'undirected=True' needs edges within "
                                     f"one node set, but {edge_type!r} is "
                                     f"bipartite")
                undirected = False
            elif undirected is None:
                undirected = is_undirected(store.edge_index,
                                           num_nodes=num_nodes)
            masks[edge_type] = prune_edges_mask(
                self._scores(store), self.ratio, store.edge_index, num_nodes,
                self.min_degree, undirected)
        if isinstance(data, HeteroData):
            return data.edge_subgraph(masks)
        return data.edge_subgraph(masks[None])

    def __repr__(self) -> str:
        score = self.score if isinstance(self.score, str) else \
            getattr(self.score, '__name__', repr(self.score))
        types = '' if self.edge_types is None else \
            f', edge_types={self.edge_types}'
        return (f'{self.__class__.__name__}(ratio={self.ratio}, '
                f'score={score!r}, min_degree={self.min_degree}, '
                f'score_attr={self.score_attr!r}, '
                f'undirected={self.undirected}, seed={self.seed}{types})')
