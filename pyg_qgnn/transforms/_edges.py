r"""Helpers shared by the edge transforms (:class:`LightGNNAdjacency`,
:class:`PruneEdges`, :class:`HighOrderAugment`): argument checks, the edge
stores a transform acts on, per-edge values, per-group ranking and
appending edges."""
import numbers
from typing import Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data, HeteroData
from torch_geometric.typing import EdgeType

#: A node count: an int for edges within one node set, or
#: :obj:`(num_src_nodes, num_dst_nodes)` for a bipartite edge type.
NumNodes = Union[int, Tuple[int, int]]


def check_int(name: str, value, minimum: int, allow_none: bool = False):
    r"""Raises :class:`ValueError` unless :obj:`value` is an int
    :math:`\geq` :obj:`minimum` (or :obj:`None` where allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < minimum:
        none = ' or None' if allow_none else ''
        raise ValueError(f"'{name}' must be an int >= {minimum}{none} "
                         f"(got {value!r})")


def check_edge_type(name: str, value) -> Optional[EdgeType]:
    r""":obj:`value` as a :obj:`(src, rel, dst)` tuple of str (or
    :obj:`None`); :class:`ValueError` naming :obj:`name` otherwise."""
    if value is None:
        return None
    if isinstance(value, str) or len(value) != 3 or not all(
            isinstance(part, str) for part in value):
        raise ValueError(f"'{name}' must be a (src, rel, dst) tuple of str "
                         f"(got {value!r})")
    return tuple(value)


def edge_type_list(edge_types) -> Optional[List[EdgeType]]:
    r"""The :obj:`edge_types` argument as a list of edge types (a single
    edge type is accepted), or :obj:`None`."""
    if edge_types is None:
        return None
    if len(edge_types) == 3 and all(isinstance(t, str) for t in edge_types):
        edge_types = [edge_types]
    return [check_edge_type('edge_types', t) for t in edge_types]


def check_edge_types(data, edge_types: Optional[List[EdgeType]]):
    r"""Raises :class:`ValueError` for :obj:`edge_types` given with a
    homogeneous graph, or naming a type :obj:`data` lacks."""
    if edge_types is None:
        return
    if not isinstance(data, HeteroData):
        raise ValueError("'edge_types' applies to HeteroData only (got "
                         f"{type(data).__name__})")
    for edge_type in edge_types:
        if tuple(edge_type) not in data.edge_types:
            raise ValueError(f"'edge_types' names {tuple(edge_type)!r}, "
                             f"which is not an edge type of 'data' (has "
                             f"{data.edge_types})")


def edge_stores(data: Union[Data, HeteroData],
                edge_types: Optional[List[EdgeType]] = None
                ) -> Iterator[Tuple[Optional[EdgeType], object]]:
    r"""Yields :obj:`(edge_type, store)`: :obj:`(None, data)` for a
    homogeneous graph, else every edge type (or those of
    :obj:`edge_types`) with its edge store. Each store must hold an
    :obj:`edge_index`."""
    check_edge_types(data, edge_types)
    if isinstance(data, HeteroData):
        types = data.edge_types if edge_types is None else \
            [tuple(t) for t in edge_types]
        pairs = [(t, data[t]) for t in types]
    else:
        pairs = [(None, data)]
    for edge_type, store in pairs:
        if store.get('edge_index', None) is None:
            where = '' if edge_type is None else f' of {edge_type!r}'
            raise ValueError(f"'data'{where} has no 'edge_index' (sparse "
                             f"'adj_t' graphs are not supported)")
        yield edge_type, store


def node_counts(data, store, edge_type: Optional[EdgeType]) -> NumNodes:
    r"""The node count of a store: an int for a homogeneous graph or an
    edge type within one node type, :obj:`(num_src, num_dst)` for a
    bipartite edge type (missing counts inferred from :obj:`edge_index`)."""
    edge_index = store.edge_index
    if edge_type is None:
        num_nodes = data.num_nodes
        return int(num_nodes if num_nodes is not None else
                   (int(edge_index.max()) + 1 if edge_index.numel() else 0))
    sizes = store.size()
    sizes = tuple(int(s) if s is not None else
                  (int(edge_index[i].max()) + 1 if edge_index.numel() else 0)
                  for i, s in enumerate(sizes))
    return sizes if edge_type[0] != edge_type[-1] else max(sizes)


def per_edge_values(value, num_edges: int, name: str) -> Tensor:
    r"""Checks that :obj:`value` holds one finite floating-point value per
    edge (shape :obj:`(E,)`) and returns it; :class:`ValueError` naming
    :obj:`name` otherwise."""
    if not isinstance(value, Tensor):
        raise ValueError(f"'{name}' must be a tensor with one value per edge "
                         f"(got {type(value).__name__})")
    if value.dim() != 1 or value.numel() != num_edges:
        raise ValueError(f"'{name}' must hold one value per edge, shape "
                         f"({num_edges},) (got {tuple(value.shape)})")
    if not value.is_floating_point():
        raise ValueError(f"'{name}' must be floating point (got "
                         f"{value.dtype})")
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"'{name}' must be finite (got {bad} NaN or "
                         f"infinite values)")
    return value


def ranks_within_groups(group: Tensor, score: Tensor) -> Tensor:
    r"""The rank of each entry within its group (:obj:`group` ids
    :math:`\geq 0`) by descending :obj:`score`, ties broken by position
    (an earlier entry ranks first): rank :obj:`0` is each group's best."""
    perm = torch.sort(score, descending=True, stable=True).indices
    perm = perm[torch.sort(group[perm], stable=True).indices]
    sorted_group = group[perm]
    counts = torch.unique_consecutive(sorted_group, return_counts=True)[1]
    starts = torch.cumsum(counts, 0) - counts
    rank_sorted = torch.arange(group.numel(), device=group.device) - \
        starts.repeat_interleave(counts)
    rank = torch.empty_like(rank_sorted)
    rank[perm] = rank_sorted
    return rank


def sorted_edges(src: np.ndarray, dst: np.ndarray, num_nodes: int,
                 like: Tensor) -> Tensor:
    r"""The unique edges :obj:`(src, dst)` sorted by source, then target, as
    an :obj:`edge_index` like :obj:`like` (:obj:`num_nodes` bounds ids)."""
    key = np.unique(src * num_nodes + dst)
    return torch.from_numpy(np.stack([key // num_nodes, key % num_nodes])).to(
        like.device, like.dtype)


def append_edges(data, store, new: Tensor, fill_value, augmented_attr: str):
    r"""Appends the edges :obj:`new` to :obj:`store`, every edge attribute
    filled with :obj:`fill_value`, flagged in :obj:`augmented_attr`."""
    num_old, num_new = store.edge_index.size(1), new.size(1)
    flag = store.get(augmented_attr, None)
    for key in store.edge_attrs():
        if key in ('edge_index', augmented_attr):
            continue
        value = store[key]
        if not isinstance(value, Tensor):
            raise ValueError(f"cannot fill the edge attribute '{key}' of new "
                             f"edges: it is a {type(value).__name__}, not a "
                             f"tensor")
        dim = data.__cat_dim__(key, value, store)
        shape = list(value.shape)
        shape[dim] = num_new
        fill = torch.full(shape, fill_value, dtype=value.dtype,
                          device=value.device)
        store[key] = torch.cat([value, fill], dim)
    if not isinstance(flag, Tensor) or flag.shape != (num_old, ):
        flag = torch.zeros(num_old, dtype=torch.bool, device=new.device)
    store[augmented_attr] = torch.cat([
        flag.bool(), torch.ones(num_new, dtype=torch.bool, device=new.device)])
    store.edge_index = torch.cat([store.edge_index, new], dim=1)
