r"""Full-ranking top-:math:`K` recommendation metrics.

Every user's scores over *all* items are ranked, the items the user has
already interacted with (training pairs) masked out, in batches of users so
that memory stays :math:`O(B \cdot I)`. Recall@K and NDCG@K are those of
LightGCN (`He et al., 2020 <https://arxiv.org/abs/2002.02126>`_), computed
by :class:`torch_geometric.metrics.LinkPredRecall` and
:class:`~torch_geometric.metrics.LinkPredNDCG`:

.. math::
    \mathrm{Recall@K}(u) = \frac{|R_u^K \cap T_u|}{|T_u|},\qquad
    \mathrm{NDCG@K}(u) = \frac{\sum_{r=1}^{K} \mathbb{1}[R_u^K(r) \in T_u]
    / \log_2(r + 1)}{\sum_{r=1}^{\min(K, |T_u|)} 1 / \log_2(r + 1)}

averaged over the users with at least one held-out item
(:math:`T_u \neq \emptyset`), where :math:`R_u^K` are the :math:`K`
best-scored items.
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.metrics import (
    LinkPredMetricCollection,
    LinkPredNDCG,
    LinkPredRecall,
)


class UserItems:
    r"""The items of each user, as CSR rows, from :obj:`(2, E)` pairs
    :obj:`(user, item)`: what to mask (training items) or to find (held-out
    items) for a batch of users."""
    def __init__(self, pairs: Tensor, num_users: int):
        if pairs.dim() != 2 or pairs.size(0) != 2:
            raise ValueError(f"'pairs' must have shape (2, E) (got "
                             f"{tuple(pairs.shape)})")
        pairs = pairs.long()
        order = torch.argsort(pairs[0], stable=True)
        items = pairs[1, order]
        counts = torch.bincount(pairs[0], minlength=num_users)
        if counts.numel() > num_users:
            raise ValueError(f"'pairs' holds user id {counts.numel() - 1}, "
                             f"out of range for {num_users} users")
        self._set_rows(counts, items)

    def _set_rows(self, counts: Tensor, items: Tensor):
        counts = counts.long()
        self.items = items.long()
        self.rowptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    @classmethod
    def from_rows(cls, counts: Tensor, items: Tensor) -> 'UserItems':
        r"""From items already grouped by user: :obj:`counts` :math:`(U)`
        items per user and :obj:`items` :math:`(\sum_u c_u)`, user 0's
        first (nothing to sort)."""
        if counts.dim() != 1 or items.dim() != 1 or \
                int(counts.sum()) != items.numel():
            raise ValueError(f"'counts' must sum to the length of 'items' "
                             f"({items.numel()}) (got {int(counts.sum())})")
        out = cls.__new__(cls)
        out._set_rows(counts, items)
        return out

    def rows(self, users: Tensor) -> Tuple[Tensor, Tensor]:
        r"""For users :obj:`users` :math:`(B)`: the batch row of each of
        their items and the items, both :math:`(\sum_b |S_b|)`."""
        users = users.to(self.rowptr.device)
        starts, ends = self.rowptr[users], self.rowptr[users + 1]
        counts = ends - starts
        row = torch.repeat_interleave(torch.arange(users.numel(),
                                                   device=users.device),
                                      counts)
        offset = torch.arange(row.numel(), device=users.device) - \
            torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        return row, self.items[torch.repeat_interleave(starts, counts) +
                               offset]


def check_k(k: int, num_items: int, name: str = 'k') -> int:
    r"""Raises unless :math:`1 \le k \le` :obj:`num_items`."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"'{name}' must be a positive int (got {k!r})")
    if k > num_items:
        raise ValueError(f"'{name}' must be at most the number of items "
                         f"({num_items:,}) (got {k:,})")
    return k


def _as_user_items(pairs, num_users: int) -> Optional[UserItems]:
    if pairs is None or isinstance(pairs, UserItems):
        return pairs
    return UserItems(pairs, num_users)


@torch.no_grad()
def top_k(user_emb: Tensor, item_emb: Tensor, k: int,
          users: Optional[Tensor] = None, exclude=None,
          batch_size: int = 1024) -> Tensor:
    r"""The :obj:`k` best-scored items (by dot product) of each user, best
    first, with the items of :obj:`exclude` masked out.

    Args:
        user_emb (torch.Tensor): User embeddings :math:`(U, F)`.
        item_emb (torch.Tensor): Item embeddings :math:`(I, F)`.
        k (int): How many items, :math:`1 \le k \le I`.
        users (torch.Tensor, optional): The users to rank for, :math:`(B)`.
            (default: all)
        exclude (torch.Tensor or UserItems, optional): :obj:`(2, E)` pairs
            :obj:`(user, item)` never recommended (the training items).
            (default: :obj:`None`)
        batch_size (int, optional): Users scored at once.
            (default: :obj:`1024`)

    Returns:
        :obj:`(B, k)` item ids.
    """
    check_k(k, item_emb.size(0))
    users = torch.arange(user_emb.size(0), device=user_emb.device) \
        if users is None else users.to(user_emb.device).long()
    exclude = _as_user_items(exclude, user_emb.size(0))
    out = []
    for batch in users.split(batch_size):
        out.append(_batch_top_k(user_emb, item_emb, batch, k, exclude))
    if not out:
        return users.new_empty(0, k)
    return torch.cat(out)


def _batch_top_k(user_emb: Tensor, item_emb: Tensor, batch: Tensor, k: int,
                 exclude: Optional[UserItems]) -> Tensor:
    scores = user_emb[batch] @ item_emb.t()
    if exclude is not None:
        row, items = exclude.rows(batch)
        scores[row.to(scores.device), items.to(scores.device)] = -float('inf')
    return scores.topk(k, dim=1).indices


@torch.no_grad()
def ranking_metrics(user_emb: Tensor, item_emb: Tensor, truth,
                    exclude=None, ks: Sequence[int] = (10, 20),
                    batch_size: int = 1024) -> Dict[str, float]:
    r"""Full-ranking Recall@K and NDCG@K for every :math:`K` in :obj:`ks`
    (see the module docstring), as :obj:`{"recall@10": ..., "ndcg@10":
    ...}`.

    Args:
        user_emb (torch.Tensor): User embeddings :math:`(U, F)`.
        item_emb (torch.Tensor): Item embeddings :math:`(I, F)`.
        truth (torch.Tensor or UserItems): Held-out :obj:`(2, E)` pairs
            :obj:`(user, item)` to find.
        exclude (torch.Tensor or UserItems, optional): Pairs masked out of
            the ranking (the training items). (default: :obj:`None`)
        ks (sequence of int, optional): Cut-offs, each at most :math:`I`.
            (default: :obj:`(10, 20)`)
        batch_size (int, optional): Users scored at once.
            (default: :obj:`1024`)
    """
    ks = sorted(set(ks))
    if not ks:
        raise ValueError("'ks' must hold at least one cut-off")
    for k in ks:
        check_k(k, item_emb.size(0), 'ks')
    num_users = user_emb.size(0)
    truth = _as_user_items(truth, num_users)
    exclude = _as_user_items(exclude, num_users)
    metrics = LinkPredMetricCollection(
        {f'{name}@{k}': cls(k) for k in ks
         for name, cls in (('recall', LinkPredRecall),
                           ('ndcg', LinkPredNDCG))}).to(user_emb.device)
    # Only users with held-out items count; score just those.
    users = (truth.rowptr[1:] > truth.rowptr[:-1]).nonzero().view(-1)
    for batch in users.to(user_emb.device).split(batch_size):
        top = _batch_top_k(user_emb, item_emb, batch, ks[-1], exclude)
        row, items = truth.rows(batch)
        metrics.update(top, torch.stack([row, items]).to(top.device))
    return {name: float(value) for name, value in metrics.compute().items()}
