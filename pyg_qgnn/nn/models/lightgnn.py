r"""The LightGNN recommender (`Chen et al., WSDM 2025
<https://arxiv.org/abs/2501.03228>`_): LightGCN propagation over learnable,
prunable edge weights, with a prunable embedding table."""
import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from pyg_qgnn.prune.masks import get_mask, set_mask

#: The precisions a :class:`LightGNN` may hold its propagation values in.
EDGE_VALUE_DTYPES = {'float32': torch.float32, 'float16': torch.float16,
                     'bfloat16': torch.bfloat16}


def check_edge_value_dtype(value) -> torch.dtype:
    r"""The :obj:`torch.dtype` of an edge value precision given as a dtype
    or by name (:obj:`"float16"`), one of :data:`EDGE_VALUE_DTYPES`."""
    dtype = EDGE_VALUE_DTYPES.get(value) if isinstance(value, str) else value
    if dtype not in EDGE_VALUE_DTYPES.values():
        raise ValueError(f"'edge_value_dtype' must be one of "
                         f"{list(EDGE_VALUE_DTYPES)} (got {value!r})")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).split('.')[-1]


def round_values(values: Tensor, dtype: torch.dtype) -> Tensor:
    r""":obj:`values` rounded to :obj:`dtype` and read back in their own
    dtype, with a straight-through gradient. The forward result is the
    rounded value exactly: :math:`v + (r - v)` has an exact difference
    (Sterbenz: :math:`r` is within a factor 2 of :math:`v`, or 0), so a
    model in training and its stored form compute the same numbers.
    :obj:`torch.float32` leaves them in the model's own precision."""
    if dtype == torch.float32 or dtype == values.dtype:
        return values
    rounded = values.to(dtype).to(values.dtype)
    if not values.requires_grad:
        return rounded
    return values + (rounded - values).detach()


class Adjacency:
    r"""The symmetric normalized user-item adjacency of Eq. 4 as a
    :obj:`torch.sparse_csr` pattern over :math:`U + I` nodes (users first),
    one directed entry per direction of each kept interaction.

    Args:
        pairs (torch.Tensor): Kept :obj:`(user, item)` pairs
            :math:`(2, E)`.
        num_users (int): :math:`U`.
        num_items (int): :math:`I`.
    """
    def __init__(self, pairs: Tensor, num_users: int, num_items: int):
        users, items = pairs[0], pairs[1] + num_users
        num_nodes = num_users + num_items
        row = torch.cat([users, items])
        col = torch.cat([items, users])
        self.perm = torch.sort(row * num_nodes + col, stable=True).indices
        self.row, self.col = row[self.perm], col[self.perm]
        self.crow = torch.zeros(num_nodes + 1, dtype=torch.long,
                                device=pairs.device)
        self.crow[1:] = torch.bincount(row, minlength=num_nodes).cumsum(0)
        self.num_nodes = num_nodes
        self.num_pairs = pairs.size(1)
        self.user_degree = torch.bincount(pairs[0], minlength=num_users)
        self.item_degree = torch.bincount(pairs[1], minlength=num_items)
        self.pairs = pairs

    @property
    def nnz(self) -> int:
        return self.row.numel()

    def normalized(self, weight: Tensor) -> Tensor:
        r""":math:`w_{ij} / \sqrt{d_i d_j}` per kept pair, with the
        unweighted degrees of the kept graph (Eq. 4)."""
        degree = (self.user_degree[self.pairs[0]] *
                  self.item_degree[self.pairs[1]]).to(weight.dtype)
        return weight * degree.rsqrt()

    def directed(self, values: Tensor) -> Tensor:
        r"""Per-pair :obj:`values` as the CSR values (both directions)."""
        return torch.cat([values, values])[self.perm]

    def matrix(self, values: Tensor) -> Tensor:
        with warnings.catch_warnings():  # torch's note on beta CSR support
            warnings.filterwarnings('ignore', message='Sparse CSR tensor')
            return torch.sparse_csr_tensor(
                self.crow, self.col, values, (self.num_nodes, self.num_nodes),
                check_invariants=False)


class _SymmetricProduct(torch.autograd.Function):
    # A x for a symmetric A, with gradients for x (A grad) and for the
    # nonzero values of A (<grad_row, x_col> per entry, by a sampled dense
    # product: 15x faster on a CPU than gathering the (nnz, dim) rows).
    @staticmethod
    def forward(ctx, values: Tensor, x: Tensor, adj: Adjacency) -> Tensor:
        matrix = adj.matrix(values.detach())
        ctx.save_for_backward(values, x)
        ctx.adj, ctx.matrix = adj, matrix
        return matrix @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        values, x = ctx.saved_tensors
        adj = ctx.adj
        grad_x = ctx.matrix @ grad if ctx.needs_input_grad[1] else None
        grad_values = None
        if ctx.needs_input_grad[0]:  # (grad x^T) sampled at A's nonzeros
            pattern = adj.matrix(torch.zeros_like(values))
            grad_values = torch.sparse.sampled_addmm(
                pattern, grad.contiguous(), x.t(), beta=0.0).values()
        return grad_values, grad_x, None


def propagate(adj: Adjacency, values: Tensor, x: Tensor, num_layers: int,
              alpha: Tensor, residual: bool) -> Tensor:
    r""":math:`\sum_{l=0}^{L} \alpha_l \mathbf{E}_l` with
    :math:`\mathbf{E}_l = \hat{\mathbf{A}} \mathbf{E}_{l-1}
    (+ \mathbf{E}_{l-1})`, :obj:`values` the CSR values of
    :math:`\hat{\mathbf{A}}`. One code path for training and deployment, so
    the two agree bit for bit."""
    out = x * alpha[0]
    for layer in range(num_layers):
        if values.requires_grad or x.requires_grad:
            step = _SymmetricProduct.apply(values, x, adj)
        else:
            step = adj.matrix(values) @ x
        x = step + x if residual else step
        out = out + x * alpha[layer + 1]
    return out


class LightGNN(nn.Module):
    r"""The pruned GNN of `"LightGNN: Simple Graph Neural Network for
    Recommendation" <https://arxiv.org/abs/2501.03228>`_ (WSDM 2025):
    LightGCN over the user-item graph whose edges carry learnable weights
    :math:`\mathbf{W}` (Eq. 4, with the residual term)

    .. math::
        \mathbf{E}_{\mathcal{U},l} = \mathbf{D}_{\mathcal{U}}^{-1/2}
        (\mathbf{A} \odot \mathbf{W}) \mathbf{D}_{\mathcal{V}}^{-1/2}
        \mathbf{E}_{\mathcal{V},l-1} + \mathbf{E}_{\mathcal{U},l-1},
        \qquad \bar{\mathbf{e}} = \sum_{l=0}^{L} \alpha_l \mathbf{e}_l

    (items analogously with :math:`(\mathbf{A} \odot \mathbf{W})^{\top}`),
    and two pruning masks: a boolean :obj:`edge_mask` over the interactions
    (a buffer) and an entry mask over the embedding table (a
    :class:`~pyg_qgnn.prune.WeightMask` parametrization, so a pruned entry
    reads as zero and gets no gradient). The degrees :math:`\mathbf{D}` are
    those of the kept edges, so the model computes what
    :class:`~pyg_qgnn.transforms.LightGNNAdjacency` gives on the pruned
    graph. Both directions of an interaction share one weight.

    Args:
        num_users (int): :math:`U`; users are nodes :math:`0..U-1`.
        num_items (int): :math:`I`; items are nodes :math:`U..U+I-1`.
        pairs (torch.Tensor): The candidate :obj:`(user, item)` edges
            :math:`(2, E)` (unique pairs).
        embedding_dim (int, optional): :math:`d`. (default: :obj:`64`)
        num_layers (int, optional): :math:`L`. (default: :obj:`2`)
        alpha (float or torch.Tensor, optional): Layer weights; by default
            :math:`1 / (L + 1)` each, as in PyG's
            :class:`~torch_geometric.nn.models.LightGCN`.
            (default: :obj:`None`)
        residual (bool, optional): Add :math:`\mathbf{E}_{l-1}` (Eq. 4).
            (default: :obj:`True`)
        learn_edge_weight (bool, optional): Learn :math:`\mathbf{W}`
            (initialised to ones); with :obj:`False` the kept edges weigh
            one (the "BnEdge" ablation). (default: :obj:`True`)
        edge_value_dtype (torch.dtype or str, optional): The precision of
            the propagation values :math:`w_{ij} / \sqrt{d_i d_j}`, one of
            :data:`EDGE_VALUE_DTYPES`. With :obj:`torch.float16` the model
            rounds them (straight-through in training) and its deployed
            form stores them in two bytes per edge, computing the same
            numbers. (default: :obj:`torch.float32`)

    Shapes:
        - **get_embedding:** :math:`(U + I, d)`
        - **forward:** :obj:`(2, B)` :obj:`(user, item)` pairs
          :math:`\rightarrow` :math:`(B)` scores
    """
    def __init__(self, num_users: int, num_items: int, pairs: Tensor,
                 embedding_dim: int = 64, num_layers: int = 2,
                 alpha=None, residual: bool = True,
                 learn_edge_weight: bool = True,
                 edge_value_dtype=torch.float32):
        super().__init__()
        for name, value in dict(num_users=num_users, num_items=num_items,
                                embedding_dim=embedding_dim).items():
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value < 1:
                raise ValueError(f"'{name}' must be a positive int (got "
                                 f"{value!r})")
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) \
                or num_layers < 0:
            raise ValueError(f"'num_layers' must be a non-negative int (got "
                             f"{num_layers!r})")
        pairs = check_pairs(pairs, num_users, num_items)
        self.edge_value_dtype = check_edge_value_dtype(edge_value_dtype)
        self.num_users, self.num_items = num_users, num_items
        self.num_layers, self.residual = num_layers, residual
        self.embedding = nn.Embedding(num_users + num_items, embedding_dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        set_mask(self.embedding, 'weight',
                 torch.ones(num_users + num_items, embedding_dim,
                            dtype=torch.bool))
        weight = torch.ones(pairs.size(1))
        if learn_edge_weight:
            self.edge_weight = nn.Parameter(weight)
        else:
            self.register_buffer('edge_weight', weight)
        self.learn_edge_weight = learn_edge_weight
        self.register_buffer('pairs', pairs)
        self.register_buffer('edge_mask',
                             torch.ones(pairs.size(1), dtype=torch.bool))
        if alpha is None:
            alpha = 1.0 / (num_layers + 1)
        if not isinstance(alpha, Tensor):
            alpha = torch.full((num_layers + 1, ), float(alpha))
        if alpha.numel() != num_layers + 1:
            raise ValueError(f"'alpha' must hold num_layers + 1 = "
                             f"{num_layers + 1} weights (got {alpha.numel()})")
        self.register_buffer('alpha', alpha.float())
        self._adjacency: Optional[Tuple[tuple, Adjacency]] = None

    @property
    def num_nodes(self) -> int:
        return self.num_users + self.num_items

    @property
    def embedding_dim(self) -> int:
        return self.embedding.embedding_dim

    @property
    def entry_mask(self) -> Tensor:
        r"""The boolean mask of the embedding table (not a copy)."""
        return get_mask(self.embedding, 'weight')

    @property
    def raw_embedding(self) -> Tensor:
        r"""The embedding table without its entry mask (the stored
        values, pruned entries included)."""
        return self.embedding.parametrizations.weight.original

    def kept_pairs(self) -> Tensor:
        return self.pairs[:, self.edge_mask]

    def kept_weight(self) -> Tensor:
        return self.edge_weight[self.edge_mask]

    def adjacency(self) -> Adjacency:
        r"""The :class:`Adjacency` of the kept edges, rebuilt when
        :obj:`edge_mask` changes."""
        key = (self.edge_mask.data_ptr(), self.edge_mask._version,
               self.pairs.data_ptr(), self.pairs._version, self.pairs.device)
        if self._adjacency is None or self._adjacency[0] != key:
            self._adjacency = (key, Adjacency(self.kept_pairs(),
                                              self.num_users,
                                              self.num_items))
        return self._adjacency[1]

    def normalized_weight(self) -> Tensor:
        r"""The values of :math:`\mathbf{D}^{-1/2} (\mathbf{A} \odot
        \mathbf{W}) \mathbf{D}^{-1/2}` per kept pair."""
        return round_values(self.adjacency().normalized(self.kept_weight()),
                            self.edge_value_dtype)

    def get_embedding(self) -> Tensor:
        r"""The final embeddings :math:`\bar{\mathbf{E}}` of all nodes."""
        adj = self.adjacency()
        values = adj.directed(self.normalized_weight())
        return propagate(adj, values, self.embedding.weight,
                         self.num_layers, self.alpha, self.residual)

    def forward(self, edge_label_index: Tensor) -> Tensor:
        out = self.get_embedding()
        users = out[edge_label_index[0]]
        items = out[self.num_users + edge_label_index[1]]
        return (users * items).sum(-1)

    @torch.no_grad()
    def set_edge_mask(self, mask: Tensor):
        if mask.shape != self.edge_mask.shape or mask.dtype != torch.bool:
            raise ValueError(f"'mask' must be a bool tensor of shape "
                             f"{tuple(self.edge_mask.shape)} (got "
                             f"{mask.dtype} {tuple(mask.shape)})")
        self.edge_mask.copy_(mask)

    @torch.no_grad()
    def set_entry_mask(self, mask: Tensor):
        if mask.shape != self.entry_mask.shape or mask.dtype != torch.bool:
            raise ValueError(f"'mask' must be a bool tensor of shape "
                             f"{tuple(self.entry_mask.shape)} (got "
                             f"{mask.dtype} {tuple(mask.shape)})")
        self.entry_mask.copy_(mask)

    @torch.no_grad()
    def load_embedding(self, table: Tensor):
        r"""Copies a float :obj:`table` (say a trained LightGCN's) into the
        embedding under the current entry mask."""
        if table.shape != self.raw_embedding.shape:
            raise ValueError(f"'table' must have shape "
                             f"{tuple(self.raw_embedding.shape)} (got "
                             f"{tuple(table.shape)})")
        self.raw_embedding.copy_(table)

    def forward_flops(self) -> int:
        r"""Floating-point operations of :meth:`get_embedding`."""
        return lightgcn_forward_flops(self.num_nodes, self.adjacency().nnz,
                                      self.embedding_dim, self.num_layers,
                                      self.residual)

    def __repr__(self) -> str:
        kept = int(self.edge_mask.sum())
        entries = int(self.entry_mask.sum())
        return (f'{self.__class__.__name__}({self.num_users}, '
                f'{self.num_items}, dim={self.embedding_dim}, '
                f'num_layers={self.num_layers}, edges={kept}/'
                f'{self.edge_mask.numel()}, entries={entries}/'
                f'{self.entry_mask.numel()}, residual={self.residual}, '
                f'learn_edge_weight={self.learn_edge_weight}, '
                f'edge_value_dtype={dtype_name(self.edge_value_dtype)})')


def lightgcn_forward_flops(num_nodes: int, nnz: int, dim: int,
                           num_layers: int, residual: bool = False) -> int:
    r"""Floating-point operations of a LightGCN forward pass over an
    adjacency with :obj:`nnz` directed entries: :math:`2 \cdot nnz \cdot d`
    per layer (one multiply-add per entry and channel), :math:`N d` per
    residual addition and :math:`2 N d` per weighted layer sum."""
    per_layer = 2 * nnz * dim + (num_nodes * dim if residual else 0)
    return num_layers * per_layer + (num_layers + 1) * 2 * num_nodes * dim


def check_pairs(pairs: Tensor, num_users: int, num_items: int) -> Tensor:
    r"""Validates :obj:`(user, item)` :obj:`pairs` :math:`(2, E)`."""
    if not isinstance(pairs, Tensor) or pairs.dim() != 2 \
            or pairs.size(0) != 2:
        raise ValueError(f"'pairs' must be a (2, E) tensor of (user, item) "
                         f"ids (got {getattr(pairs, 'shape', type(pairs))})")
    if pairs.dtype.is_floating_point or pairs.dtype == torch.bool:
        raise ValueError(f"'pairs' must hold integer ids (got {pairs.dtype})")
    pairs = pairs.long().contiguous().clone()  # the model's own copy
    for row, limit, what in ((0, num_users, 'user'), (1, num_items, 'item')):
        if pairs.size(1) and (int(pairs[row].min()) < 0 or
                              int(pairs[row].max()) >= limit):
            raise ValueError(f"'pairs' has {what} ids outside [0, {limit}) "
                             f"(got [{int(pairs[row].min())}, "
                             f"{int(pairs[row].max())}])")
    return pairs

