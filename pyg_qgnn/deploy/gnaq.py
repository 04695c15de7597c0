r"""The deployed GNAQ recommender: packed codes and FP8 level tables.

:class:`DeployedGNAQ` is what a trained GNAQ
:class:`~pyg_qgnn.nn.models.gnaq.QuantLightGCN` ships as. It stores each
node's :math:`b`-bit codes bit-packed (:func:`~pyg_qgnn.quantizers.pack_bits`,
3-bit codes take 4 bits), its :math:`2^b` levels in
:obj:`torch.float8_e4m3fn`, the layer weights :math:`\alpha` and, for
serving, the training interactions (:obj:`int32`); nothing else. The
propagated embeddings are recomputed from them once, on first use after
building or loading, and kept in memory (not stored, not counted by
:func:`~pyg_qgnn.deploy.nbytes`). Its embeddings, scores and top-:math:`K`
lists equal those of the trained model in evaluation mode exactly: both
read the same FP8 levels and run the same propagation.

.. code-block:: python

    deployed = deploy.convert(gnaq_model.eval())  # DeployedGNAQ.from_trained
    deployed.attach_graph(data.train, data.num_users)
    deployed.recommend(torch.arange(1024), k=20)   # (1024, 20) item ids
    deployed.save('gnaq.safetensors')
    DeployedGNAQ.load('gnaq.safetensors').recommend(...)
"""
import os
from typing import Optional, Union

import torch
from torch import Tensor

from pyg_qgnn.datasets.recsys import normalized_adjacency
from pyg_qgnn.deploy.convert import DeployedLayer, register_deployed_layer
from pyg_qgnn.deploy.safe_file import load_model, save_model, set_buffers
from pyg_qgnn.metrics import UserItems, top_k
from pyg_qgnn.nn.conv.quant_lg_conv import sparse_propagate
from pyg_qgnn.nn.models.gnaq import QuantLightGCN
from pyg_qgnn.quantizers.node_aware import LEVEL_DTYPE, NodeAwareQuantizer
from pyg_qgnn.quantizers.packing import container_bits, pack_bits, unpack_bits

FORMAT = 'pyg_qgnn.gnaq'
VERSION = '2'  # 2: 'append_levels' replaced 'dynamic_step'
PathLike = Union[str, os.PathLike]


class DeployedGNAQ(DeployedLayer):
    r"""Inference-only GNAQ recommender (see the module docstring).

    .. math::
        \mathbf{H}^{(0)} = \mathbf{S}[\mathbf{Q}]\ \text{or}\
        [\mathbf{S}[\mathbf{Q}], \mathbf{S}],\quad
        \mathbf{H} = \sum_{l=0}^{L} \alpha_l\,(\mathbf{D}^{-1/2}\mathbf{A}
        \mathbf{D}^{-1/2})^l\,\mathbf{H}^{(0)}

    Args:
        num_nodes (int): Users plus items.
        embedding_dim (int): :math:`d`.
        num_layers (int): :math:`L`.
        bits (int, optional): Code width :math:`b`. (default: :obj:`2`)
        append_levels (bool, optional): The levels are appended to the
            propagated embedding (see
            :class:`~pyg_qgnn.quantizers.NodeAwareQuantizer`).
            (default: :obj:`False`)
    """
    def __init__(self, num_nodes: int, embedding_dim: int, num_layers: int,
                 bits: int = 2, append_levels: bool = False):
        super().__init__()
        self.num_nodes, self.embedding_dim = num_nodes, embedding_dim
        self.num_layers, self.bits = num_layers, bits
        self.append_levels = append_levels
        self.width = container_bits(bits)
        row_bytes = (embedding_dim * self.width + 7) // 8
        self.register_buffer('codes', torch.zeros(num_nodes, row_bytes,
                                                  dtype=torch.uint8))
        self.register_buffer('levels', torch.zeros(
            num_nodes, 1 << bits, dtype=LEVEL_DTYPE))
        self.register_buffer('alpha', torch.zeros(num_layers + 1))
        # The serving graph: items of each user, users in id order.
        self.register_buffer('user_counts', torch.empty(0, dtype=torch.int32))
        self.register_buffer('user_items', torch.empty(0, dtype=torch.int32))
        self._cache = None  # the propagated embeddings
        self._seen = None  # the stored graph as UserItems, for top-K

    @classmethod
    @torch.no_grad()
    def from_trained(cls, twin: QuantLightGCN) -> 'DeployedGNAQ':
        r"""The deployed form of a trained GNAQ :obj:`twin` (a
        :class:`QuantLightGCN` whose embedding quantizer is a
        :class:`~pyg_qgnn.quantizers.NodeAwareQuantizer`)."""
        quantizer = getattr(twin, 'embedding_quantizer', None)
        if not isinstance(quantizer, NodeAwareQuantizer):
            raise TypeError(f"only GNAQ models deploy as DeployedGNAQ: the "
                            f"embedding quantizer is "
                            f"{type(quantizer).__name__}, not a "
                            f"NodeAwareQuantizer")
        if not (quantizer.initialized and quantizer.fake_quant_enabled):
            raise ValueError("the NodeAwareQuantizer is not initialized or "
                             "switched off: nothing to deploy")
        if any(conv.normalize for conv in twin.convs):
            raise ValueError("deploying needs layers built with "
                             "normalize=False that propagate the "
                             "normalized_adjacency of the training graph")
        deployed = cls(twin.num_nodes, twin.embedding_dim, twin.num_layers,
                       quantizer.bits, quantizer.append_levels)
        deployed.codes = pack_bits(quantizer.codes.cpu(), deployed.width)
        deployed.levels = quantizer.stored_levels().detach().cpu().to(
            LEVEL_DTYPE)
        deployed.alpha = twin.alpha.detach().cpu().float().clone()
        return deployed

    @torch.no_grad()
    def attach_graph(self, pairs: Tensor, num_users: int):
        r"""Stores the training interactions :obj:`(2, E)` pairs
        :obj:`(user, item)` the model propagates over and never
        recommends again; :obj:`num_users` splits the nodes into users and
        items."""
        num_items = self.num_nodes - num_users
        if not 0 < num_users < self.num_nodes:
            raise ValueError(f"'num_users' must be in 1..{self.num_nodes - 1} "
                             f"(the model has {self.num_nodes} nodes) (got "
                             f"{num_users})")
        pairs = pairs.long()
        if pairs.numel() and (int(pairs[0].max()) >= num_users or
                              int(pairs[1].max()) >= num_items or
                              int(pairs.min()) < 0):
            raise ValueError(f"'pairs' holds ids out of range for "
                             f"{num_users} users and {num_items} items")
        order = torch.argsort(pairs[0] * num_items + pairs[1])
        pairs = pairs[:, order]
        self.user_counts = torch.bincount(
            pairs[0], minlength=num_users).to(torch.int32)
        self.user_items = pairs[1].to(torch.int32)
        self._cache = self._seen = None

    @property
    def num_users(self) -> int:
        return self.user_counts.numel()

    @property
    def has_graph(self) -> bool:
        return self.num_users > 0

    def interactions(self) -> Tensor:
        r"""The stored training pairs :obj:`(2, E)`."""
        self._require_graph()
        users = torch.repeat_interleave(
            torch.arange(self.num_users), self.user_counts.long())
        return torch.stack([users, self.user_items.long()])

    def _require_graph(self):
        if not self.has_graph:
            raise RuntimeError('no serving graph: call attach_graph(pairs, '
                               'num_users) with the training interactions')

    def layer0(self) -> Tensor:
        r""":math:`\mathbf{H}^{(0)}` from the stored codes and levels."""
        levels = self.levels.float()
        codes = unpack_bits(self.codes, self.width, self.embedding_dim)
        out = levels.gather(1, codes.long())
        return torch.cat([out, levels], dim=1) if self.append_levels \
            else out

    @torch.no_grad()
    def get_embedding(self, adj: Optional[Tensor] = None) -> Tensor:
        r"""The propagated embeddings :math:`\mathbf{H}` :math:`(N, d)`
        (:math:`(N, d + 2^b)` with appended levels) over :obj:`adj` (a
        :obj:`torch.sparse_csr` normalized adjacency), by default over the
        stored graph (computed once)."""
        if adj is None:
            if self._cache is None:
                self._require_graph()
                graph = normalized_adjacency(self.interactions(),
                                             self.num_users,
                                             self.num_nodes - self.num_users)
                self._cache = self._propagate(graph)
            return self._cache
        return self._propagate(adj)

    def _propagate(self, adj: Tensor) -> Tensor:
        x = self.layer0()
        out = x * self.alpha[0]
        for i in range(self.num_layers):
            x = sparse_propagate(adj, x)
            out = out + x * self.alpha[i + 1]
        return out

    @torch.no_grad()
    def forward(self, edge_index: Optional[Tensor] = None,
                edge_label_index: Optional[Tensor] = None) -> Tensor:
        r"""Scores of the node pairs :obj:`edge_label_index`, as
        :class:`~torch_geometric.nn.models.LightGCN`'s forward, over the
        adjacency :obj:`edge_index` (default: the stored graph)."""
        if edge_label_index is None:
            raise ValueError("'edge_label_index' (2, P) names the node pairs "
                             "to score")
        out = self.get_embedding(edge_index)
        return (out[edge_label_index[0]] * out[edge_label_index[1]]).sum(-1)

    @torch.no_grad()
    def recommend(self, users: Tensor, k: int = 20,
                  exclude_seen: bool = True) -> Tensor:
        r"""The top-:obj:`k` items :math:`(B, k)` (item ids, best first) of
        each of :obj:`users`, their training items left out unless
        :obj:`exclude_seen=False`."""
        self._require_graph()
        users = torch.as_tensor(users).long().view(-1)
        if users.numel() and (int(users.min()) < 0 or
                              int(users.max()) >= self.num_users):
            raise ValueError(f"'users' must be ids in 0..{self.num_users - 1}")
        out = self.get_embedding()
        exclude = None
        if exclude_seen:
            if self._seen is None:
                self._seen = UserItems.from_rows(self.user_counts,
                                                 self.user_items)
            exclude = self._seen
        return top_k(out[:self.num_users], out[self.num_users:], k, users,
                     exclude)

    def embedding_nbytes(self) -> int:
        r"""Bytes of the packed codes and FP8 levels."""
        return (self.codes.numel() * self.codes.element_size() +
                self.levels.numel() * self.levels.element_size())

    def graph_nbytes(self) -> int:
        r"""Bytes of the stored serving graph."""
        return (self.user_counts.numel() + self.user_items.numel()) * 4

    def _config(self) -> dict:
        return dict(num_nodes=self.num_nodes,
                    embedding_dim=self.embedding_dim,
                    num_layers=self.num_layers, bits=self.bits,
                    append_levels=self.append_levels)

    def save(self, path: PathLike) -> int:
        r"""Writes the model to a safetensors file; returns its size in
        bytes."""
        return save_model(self, path, FORMAT, VERSION, self._config())

    @classmethod
    def load(cls, path: PathLike) -> 'DeployedGNAQ':
        r"""Reads a file written by :meth:`save` (no code is unpickled)."""
        model, tensors = load_model(cls, path, FORMAT, VERSION)
        path = os.fspath(path)
        set_buffers(model, tensors, path, ('codes', 'levels', 'alpha'))
        return model

    def extra_repr(self) -> str:
        graph = (f', users={self.num_users}, interactions='
                 f'{self.user_items.numel()}' if self.has_graph else
                 ', no serving graph')
        return (f'{self.num_nodes}, {self.embedding_dim}, '
                f'num_layers={self.num_layers}, bits={self.bits} packed in '
                f'{self.width}, levels=float8_e4m3fn, alpha=float32{graph}; '
                f'propagated embeddings recomputed on load, not stored')


register_deployed_layer(QuantLightGCN, DeployedGNAQ)
