r"""The deployed LightGNN student: only what survived pruning.

:class:`DeployedLightGNN` stores the kept edges as a user-sorted CSR (the
item ids in :obj:`uint16` when there are at most 65,536 items, else
:obj:`int32`) with one propagation value per edge (the learned
:math:`w_{ij} / \sqrt{d_i d_j}` of Eq. 4, in the model's
:obj:`edge_value_dtype`: four bytes, or two in :obj:`float16`), the
embedding table as
a bitmap of its nonzero entries (:math:`d` bits per node) plus their
:obj:`float32` values, and the layer weights; its reduced layer count is in
the file's config. Inference propagates over the pruned graph only, with
the code path of :class:`~pyg_qgnn.nn.models.LightGNN`, so its embeddings
equal the trained model's in evaluation mode bit for bit.

.. code-block:: python

    deployed = deploy.convert(student.eval())  # DeployedLightGNN.from_trained
    deployed.recommend(torch.arange(1024), k=20, exclude=data.train)
    deployed.save('student.safetensors')
    DeployedLightGNN.load('student.safetensors').get_embedding()
"""
import os
from typing import Optional, Union

import torch
from torch import Tensor

from pyg_qgnn.deploy.convert import DeployedLayer, register_deployed_layer
from pyg_qgnn.deploy.safe_file import load_model, save_model, set_buffers
from pyg_qgnn.metrics import top_k
from pyg_qgnn.nn.models.lightgnn import (
    Adjacency,
    LightGNN,
    check_edge_value_dtype,
    dtype_name,
    lightgcn_forward_flops,
    propagate,
)
from pyg_qgnn.quantizers.packing import pack_bits, unpack_bits

FORMAT = 'pyg_qgnn.lightgnn'
VERSION = '1'
PathLike = Union[str, os.PathLike]


def item_dtype(num_items: int) -> torch.dtype:
    r"""The smallest id type for :obj:`num_items` items."""
    return torch.uint16 if num_items <= 1 << 16 else torch.int32


class DeployedLightGNN(DeployedLayer):
    r"""Inference-only pruned LightGNN (see the module docstring).

    .. math::
        \bar{\mathbf{E}} = \sum_{l=0}^{L} \alpha_l \mathbf{E}_l, \qquad
        \mathbf{E}_l = \hat{\mathbf{A}}_{\mathrm{kept}} \mathbf{E}_{l-1}
        + \mathbf{E}_{l-1}

    Args:
        num_users (int): :math:`U`.
        num_items (int): :math:`I`.
        embedding_dim (int): :math:`d`.
        num_layers (int): :math:`L`.
        residual (bool, optional): Eq. 4's residual term.
            (default: :obj:`True`)
        edge_value_dtype (torch.dtype or str, optional): The stored
            precision of the propagation values (as in
            :class:`~pyg_qgnn.nn.models.LightGNN`); they are read back as
            :obj:`float32`. (default: :obj:`torch.float32`)
    """
    def __init__(self, num_users: int, num_items: int, embedding_dim: int,
                 num_layers: int, residual: bool = True,
                 edge_value_dtype=torch.float32):
        super().__init__()
        self.num_users, self.num_items = num_users, num_items
        self.embedding_dim, self.num_layers = embedding_dim, num_layers
        self.residual = residual
        self.edge_value_dtype = check_edge_value_dtype(edge_value_dtype)
        num_nodes = num_users + num_items
        self.register_buffer('user_counts', torch.zeros(
            num_users, dtype=torch.int32))
        self.register_buffer('user_items', torch.empty(
            0, dtype=item_dtype(num_items)))
        self.register_buffer('edge_values', torch.empty(
            0, dtype=self.edge_value_dtype))
        self.register_buffer('entry_bits', torch.zeros(
            num_nodes, (embedding_dim + 7) // 8, dtype=torch.uint8))
        self.register_buffer('entry_values', torch.empty(0))
        self.register_buffer('alpha', torch.zeros(num_layers + 1))
        self._cache = None

    @classmethod
    @torch.no_grad()
    def from_trained(cls, twin: LightGNN) -> 'DeployedLightGNN':
        r"""The deployed form of a trained (pruned) :obj:`twin`."""
        if not isinstance(twin, LightGNN):
            raise TypeError(f"'twin' must be a LightGNN (got "
                            f"{type(twin).__name__})")
        out = cls(twin.num_users, twin.num_items, twin.embedding_dim,
                  twin.num_layers, twin.residual, twin.edge_value_dtype)
        pairs = twin.kept_pairs().cpu()
        # already rounded to edge_value_dtype by the twin: no loss here
        values = twin.normalized_weight().detach().cpu().to(
            out.edge_value_dtype)
        order = torch.argsort(pairs[0] * twin.num_items + pairs[1])
        out.user_counts = torch.bincount(
            pairs[0], minlength=twin.num_users).to(torch.int32)
        out.user_items = pairs[1, order].to(item_dtype(twin.num_items))
        out.edge_values = values[order].contiguous()
        mask = twin.entry_mask.cpu()
        out.entry_bits = pack_bits(mask.to(torch.uint8), 1)
        out.entry_values = twin.raw_embedding.detach().float().cpu()[mask]
        out.alpha = twin.alpha.detach().float().cpu().clone()
        return out

    @property
    def num_nodes(self) -> int:
        return self.num_users + self.num_items

    def kept_pairs(self) -> Tensor:
        r"""The stored edges as :obj:`(user, item)` pairs :math:`(2, E)`."""
        users = torch.repeat_interleave(torch.arange(self.num_users),
                                        self.user_counts.long())
        return torch.stack([users, self.user_items.long()])

    def propagation_values(self) -> Tensor:
        r"""The stored edge values as :obj:`float32`."""
        return self.edge_values.float()

    def layer0(self) -> Tensor:
        r"""The embedding table, zeros where entries were pruned."""
        mask = unpack_bits(self.entry_bits, 1, self.embedding_dim).bool()
        out = torch.zeros(self.num_nodes, self.embedding_dim)
        out[mask] = self.entry_values
        return out

    @torch.no_grad()
    def get_embedding(self) -> Tensor:
        r"""The final embeddings :math:`(U + I, d)`, computed on first use
        and kept in memory (not stored)."""
        if self._cache is None:
            adj = Adjacency(self.kept_pairs(), self.num_users, self.num_items)
            self._cache = propagate(adj,
                                    adj.directed(self.propagation_values()),
                                    self.layer0(), self.num_layers,
                                    self.alpha, self.residual)
        return self._cache

    @torch.no_grad()
    def forward(self, edge_label_index: Tensor) -> Tensor:
        r"""Scores of :obj:`(user, item)` pairs :math:`(2, B)`."""
        out = self.get_embedding()
        return (out[edge_label_index[0]] *
                out[self.num_users + edge_label_index[1]]).sum(-1)

    @torch.no_grad()
    def recommend(self, users: Tensor, k: int = 20,
                  exclude: Optional[Tensor] = None) -> Tensor:
        r"""The top-:obj:`k` item ids :math:`(B, k)` of :obj:`users`, the
        :obj:`(user, item)` pairs of :obj:`exclude` (say the training
        interactions, which the pruned graph no longer holds all of) left
        out."""
        users = torch.as_tensor(users).long().view(-1)
        if users.numel() and (int(users.min()) < 0 or
                              int(users.max()) >= self.num_users):
            raise ValueError(f"'users' must be ids in 0..{self.num_users - 1}")
        out = self.get_embedding()
        return top_k(out[:self.num_users], out[self.num_users:], k, users,
                     exclude)

    def forward_flops(self) -> int:
        r"""Floating-point operations of :meth:`get_embedding`."""
        return lightgcn_forward_flops(self.num_nodes,
                                      2 * self.user_items.numel(),
                                      self.embedding_dim, self.num_layers,
                                      self.residual)

    def _config(self) -> dict:
        return dict(num_users=self.num_users, num_items=self.num_items,
                    embedding_dim=self.embedding_dim,
                    num_layers=self.num_layers, residual=self.residual,
                    edge_value_dtype=dtype_name(self.edge_value_dtype))

    def save(self, path: PathLike) -> int:
        r"""Writes the model to a safetensors file; returns its size in
        bytes."""
        return save_model(self, path, FORMAT, VERSION, self._config())

    @classmethod
    def load(cls, path: PathLike) -> 'DeployedLightGNN':
        r"""Reads a file written by :meth:`save` (no code is unpickled)."""
        model, tensors = load_model(cls, path, FORMAT, VERSION)
        path = os.fspath(path)
        set_buffers(model, tensors, path,
                    ('user_counts', 'entry_bits', 'alpha'))
        model._check_consistent(path)
        return model

    def _check_consistent(self, path: str):
        counts = self.user_counts.long()
        entries = int(unpack_bits(self.entry_bits, 1,
                                  self.embedding_dim).sum())
        problems = []
        if int(counts.sum()) != self.user_items.numel() or \
                self.edge_values.numel() != self.user_items.numel():
            problems.append('edge counts disagree')
        if self.user_items.numel() and \
                int(self.user_items.long().max()) >= self.num_items:
            problems.append('item ids out of range')
        if entries != self.entry_values.numel():
            problems.append('entry bitmap and values disagree')
        if problems:
            raise ValueError(f"'path' {path!r} is corrupt: "
                             f"{', '.join(problems)}")

    def extra_repr(self) -> str:
        return (f'{self.num_users}, {self.num_items}, '
                f'dim={self.embedding_dim}, num_layers={self.num_layers}, '
                f'edges={self.user_items.numel()} (item ids '
                f'{dtype_name(self.user_items.dtype)}, values '
                f'{dtype_name(self.edge_value_dtype)}), '
                f'entries={self.entry_values.numel()} (bitmap + '
                f'float32 values), alpha=float32; propagated embeddings '
                f'recomputed on load, not stored')


register_deployed_layer(LightGNN, DeployedLightGNN)
