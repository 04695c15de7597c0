import numbers
from typing import Optional, Tuple, Union

import numpy as np
import scipy.sparse as sp
from torch_geometric.data import Data, HeteroData
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform
from torch_geometric.typing import EdgeType

from pyg_qgnn.transforms._edges import (
    append_edges,
    check_edge_type,
    check_int,
    edge_stores,
    node_counts,
    sorted_edges,
)


def _symmetric(src: np.ndarray, dst: np.ndarray, num_nodes: int):
    r"""The binary symmetric adjacency (no self loops) of the edges."""
    src, dst = src[src != dst], dst[src != dst]
    adj = sp.csr_matrix((np.ones(2 * src.size), (np.concatenate(
        [src, dst]), np.concatenate([dst, src]))), shape=(num_nodes,) * 2)
    adj.data[:] = 1.0  # duplicates were summed: binarize
    return adj


def _chunk_pairs(walks, linked, start: int, col0: int,
                 max_per_node: Optional[int], square: bool):
    r"""The new pairs of one chunk of rows (see :func:`high_order_pairs`):
    one sort by :obj:`(row, -count, col)`, where linked pairs are found
    by binary search and dropped before the per-row cap."""
    num_rows, num_cols = walks.shape
    local = np.repeat(np.arange(num_rows, dtype=np.int64),
                      np.diff(walks.indptr))
    col = walks.indices.astype(np.int64)
    hit = walks.multiply(linked).tocoo()  # linked pairs, with their counts
    values = np.concatenate([walks.data, hit.data])
    top = float(values.max()) if values.size else 0.0
    if (top + 1) * num_rows * num_cols < 2**62:  # counts fit the sort key
        codes, top = np.rint(values).astype(np.int64), int(top)
    else:  # replace counts by their ranks
        levels, codes = np.unique(values, return_inverse=True)
        codes, top = codes.astype(np.int64), levels.size - 1
    code, hit_code = codes[:col.size], codes[col.size:]

    def sort_key(row, count, column):
        return (row * (top + 1) + (top - count)) * num_cols + column

    key = sort_key(local, code, col)
    del code
    sentinel = np.iinfo(np.int64).max
    if square:  # drop (r, r)
        key[local + start == col + col0] = sentinel
    order = np.argsort(key)
    key = key[order]
    keep = key != sentinel
    found = np.searchsorted(key, sort_key(hit.row.astype(np.int64), hit_code,
                                          hit.col.astype(np.int64)))
    keep[found] = False
    local, col = local[order][keep], col[order][keep]
    del key, order, keep
    if max_per_node is not None and local.size:
        counts = np.bincount(local, minlength=num_rows)
        rank = np.arange(local.size) - np.repeat(np.cumsum(counts) - counts,
                                                 counts)
        top_k = rank < max_per_node
        local, col = local[top_k], col[top_k]
    return local + start, col + col0


def high_order_pairs(adj, rows: int, cols: Tuple[int, int], hops: int,
                     max_per_node: Optional[int] = None,
                     chunk_size: int = 2048) -> Tuple[np.ndarray, np.ndarray]:
    r"""The new pairs :math:`(r, c)`, :math:`r <` :obj:`rows`,
    :obj:`cols[0]` :math:`\leq c <` :obj:`cols[1]`, :math:`r \neq c`, with
    :math:`((\mathbf{A} + \mathbf{I})^h)_{rc} \neq 0` and
    :math:`a_{rc} = 0`, for the binary symmetric SciPy matrix :obj:`adj`
    (:math:`\mathbf{A}`, no self loops), grouped by :math:`r`: at most
    :obj:`max_per_node` per row, those of highest
    :math:`((\mathbf{A} + \mathbf{I})^h)_{rc}`, ties by smaller :math:`c`.
    Computed :obj:`chunk_size` rows at a time, never densely."""
    step = (adj + sp.identity(adj.shape[0], format='csr')).tocsr()
    last = step[:, cols[0]:cols[1]].tocsr()
    square = cols == (0, adj.shape[0])
    found_rows, found_cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for start in range(0, rows, chunk_size):
        stop = min(start + chunk_size, rows)
        walks = step[start:stop]
        for _ in range(hops - 2):
            walks = walks @ step
        walks = (walks @ last) if hops > 1 else walks[:, cols[0]:cols[1]]
        row, col = _chunk_pairs(sp.csr_matrix(walks),
                                adj[start:stop, cols[0]:cols[1]], start,
                                cols[0], max_per_node, square)
        found_rows.append(row)
        found_cols.append(col)
    return np.concatenate(found_rows), np.concatenate(found_cols)


@functional_transform('high_order_augment')
class HighOrderAugment(BaseTransform):
    r"""Adds the high-order edges of the augmented graph of
    `LightGNN <https://arxiv.org/abs/2501.03228>`_ (Eq. 7) (functional
    name: :obj:`high_order_augment`): every user-item pair linked by a path
    of at most :obj:`hops` hops,

    .. math::
        \tilde{\mathcal{E}} = \mathcal{E} \cup \{(u, i), (i, u) :
        \tilde{a}^{(h)}_{u,i} \neq 0\}, \qquad
        \tilde{\mathbf{A}}^{(h)} = (\mathbf{A} + \mathbf{I})^h

    with :math:`\mathbf{A}` the binary symmetric adjacency (an edge in
    either direction, duplicates counted once, self loops ignored). In a
    bipartite graph user-item paths have odd length: :obj:`hops=1` and
    :obj:`hops=2` add nothing, :obj:`hops=3` adds pairs at distance 3.

    * A homogeneous :class:`~torch_geometric.data.Data` with
      :obj:`data.num_users` (as :meth:`~pyg_qgnn.datasets.RecSysData.graph`
      builds it: users :math:`0..U-1`, items :math:`U..N-1`): paths use the
      user-item edges only, and user-item pairs are added, both directions.
    * Without :obj:`data.num_users`: all pairs :math:`(i, j)`,
      :math:`i \neq j`, both directions.
    * A :class:`~torch_geometric.data.HeteroData`: pairs of
      :obj:`edge_type` :obj:`(src, rel, dst)` along alternating paths,
      added to it and, reversed, to :obj:`rev_edge_type` (whose edges also
      count as paths).

    Graphs are expected symmetric: a pair linked in either direction is
    never added (so duplicates create nothing). Original edges stay first,
    in order; new ones are appended sorted by source, then target. Every
    edge attribute of the new edges is :obj:`fill_value` (cast to its
    dtype: :obj:`0.0`, :obj:`0` or :obj:`False` by default), and the
    boolean edge attribute :obj:`augmented_attr` flags them.

    **Cap.** With :obj:`max_per_node` :math:`k`, each source node (user,
    :obj:`src` node, or any node of a generic graph) keeps the :math:`k`
    new pairs of highest :math:`\tilde{a}^{(h)}_{u,i}`, the number of
    walks of length :math:`\leq h` (with pauses) between them, a count of
    paths through shared neighbours; ties go to the smaller target id. In
    a generic graph each kept pair is added in both directions, so a node
    may get more than :math:`k` new edges from others' choices.

    Walks are counted with SciPy sparse products, :obj:`chunk_size` source
    rows at a time: no dense user-item matrix is ever built.

    Args:
        hops (int, optional): The path length :math:`h \geq 1`.
            (default: :obj:`3`)
        max_per_node (int, optional): The cap :math:`k` per source node, or
            :obj:`None` for none. (default: :obj:`None`)
        edge_type (Tuple[str, str, str], optional): The edge type of a
            :class:`~torch_geometric.data.HeteroData` to augment; the single
            edge type (or the one of a type and its :obj:`rev_` reverse) if
            :obj:`None`. (default: :obj:`None`)
        rev_edge_type (Tuple[str, str, str], optional): Its reverse type;
            :obj:`(dst, "rev_" + rel, src)` if :obj:`None` and present.
            (default: :obj:`None`)
        fill_value (float, optional): Value of the new edges' attributes.
            (default: :obj:`0.0`)
        augmented_attr (str, optional): Name of the flag attribute.
            (default: :obj:`"edge_augmented"`)
        chunk_size (int, optional): Source rows per sparse product.
            (default: :obj:`2048`)
    """
    def __init__(self, hops: int = 3, max_per_node: Optional[int] = None,
                 edge_type: Optional[EdgeType] = None,
                 rev_edge_type: Optional[EdgeType] = None,
                 fill_value: Union[float, int, bool] = 0.0,
                 augmented_attr: str = 'edge_augmented',
                 chunk_size: int = 2048):
        check_int('hops', hops, 1)
        check_int('max_per_node', max_per_node, 1, allow_none=True)
        check_int('chunk_size', chunk_size, 1)
        if not isinstance(fill_value, numbers.Number):
            raise ValueError(f"'fill_value' must be a number (got "
                             f"{fill_value!r})")
        if not isinstance(augmented_attr, str) or not augmented_attr:
            raise ValueError(f"'augmented_attr' must be a non-empty str "
                             f"(got {augmented_attr!r})")
        self.hops = hops
        self.max_per_node = max_per_node
        self.edge_type = check_edge_type('edge_type', edge_type)
        self.rev_edge_type = check_edge_type('rev_edge_type', rev_edge_type)
        self.fill_value = fill_value
        self.augmented_attr = augmented_attr
        self.chunk_size = chunk_size

    def _new_pairs(self, src, dst, num_nodes: int, rows: int, col0: int):
        adj = _symmetric(src, dst, num_nodes)
        return high_order_pairs(adj, rows, (col0, num_nodes), self.hops,
                                self.max_per_node, self.chunk_size)

    def forward(
        self,
        data: Union[Data, HeteroData],
    ) -> Union[Data, HeteroData]:
        if isinstance(data, HeteroData):
            return self._hetero(data)
        if self.edge_type is not None or self.rev_edge_type is not None:
            raise ValueError("'edge_type' and 'rev_edge_type' apply to "
                             "HeteroData only")
        _, store = next(edge_stores(data))
        num_nodes = node_counts(data, store, None)
        src, dst = store.edge_index.cpu().numpy()
        num_users = data.get('num_users', None)
        if num_users is None:  # a generic graph: all pairs
            r, c = self._new_pairs(src, dst, num_nodes, num_nodes, 0)
        else:
            num_users = int(num_users)
            if not 0 <= num_users <= num_nodes:
                raise ValueError(f"'data.num_users' must be in [0, "
                                 f"{num_nodes}] (got {num_users})")
            between = (src < num_users) != (dst < num_users)
            r, c = self._new_pairs(src[between], dst[between], num_nodes,
                                   num_users, num_users)
        new = sorted_edges(np.concatenate([r, c]), np.concatenate([c, r]),
                           num_nodes, store.edge_index)
        append_edges(data, store, new, self.fill_value, self.augmented_attr)
        return data

    def _hetero(self, data: HeteroData) -> HeteroData:
        types, edge_type = data.edge_types, self.edge_type
        if edge_type is None:
            forward = [t for t in types if not t[1].startswith('rev_')]
            if len(types) == 1 or (len(types) == 2 and len(forward) == 1):
                edge_type = forward[0] if forward else types[0]
            else:
                raise ValueError(f"'edge_type' must be given for HeteroData "
                                 f"with several edge types (got {types})")
        src_type, rel, dst_type = edge_type
        rev_type = self.rev_edge_type or (dst_type, f'rev_{rel}', src_type)
        if self.rev_edge_type is None and rev_type not in types:
            rev_type = None
        for name, value in dict(edge_type=edge_type,
                                rev_edge_type=rev_type).items():
            if value is not None and value not in types:
                raise ValueError(f"'{name}' {value!r} is not an edge type "
                                 f"of 'data' (has {types})")
        stores = dict(edge_stores(data, [t for t in (edge_type, rev_type)
                                         if t is not None]))
        size = node_counts(data, stores[edge_type], edge_type)
        src, dst = stores[edge_type].edge_index.cpu().numpy()
        if rev_type is not None:  # reverse edges count as paths too
            back_dst, back_src = stores[rev_type].edge_index.cpu().numpy()
            src, dst = np.concatenate([src, back_src]), np.concatenate(
                [dst, back_dst])
        if isinstance(size, tuple):  # bipartite: dst nodes after src nodes
            r, c = self._new_pairs(src, dst + size[0], sum(size), size[0],
                                   size[0])
            c, size = c - size[0], max(size)
        else:
            r, c = self._new_pairs(src, dst, size, size, 0)
            r, c = np.concatenate([r, c]), np.concatenate([c, r])
        like = stores[edge_type].edge_index
        for edge_type, (a, b) in [(edge_type, (r, c)), (rev_type, (c, r))]:
            if edge_type is not None:
                append_edges(data, stores[edge_type],
                             sorted_edges(a, b, size, like), self.fill_value,
                             self.augmented_attr)
        return data

    def __repr__(self) -> str:
        types = ''.join(f', {name}={value!r}' for name, value in dict(
            edge_type=self.edge_type, rev_edge_type=self.rev_edge_type).items()
                        if value is not None)
        return (f'{self.__class__.__name__}(hops={self.hops}, '
                f'max_per_node={self.max_per_node}{types}, '
                f'fill_value={self.fill_value}, '
                f'augmented_attr={self.augmented_attr!r}, '
                f'chunk_size={self.chunk_size})')
