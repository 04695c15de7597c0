r"""Learnable edge and embedding pruning of `LightGNN
<https://arxiv.org/abs/2501.03228>`_ (WSDM 2025, Sec. 3.1).

A :class:`~pyg_qgnn.nn.models.LightGNN` holds a learnable weight per edge
and two masks. Each pruning run trains the model, then drops the share
:math:`\rho` of its remaining edges with the lowest decision weight
:math:`|\tilde{w}|` (Eq. 8) and the share :math:`\rho'` of its remaining
embedding entries with the lowest :math:`|e_{i,d'}|`: the same share of
every user's edges and of every node's entries (:func:`keep_top_per_group`),
or one threshold over all of them. :func:`pruning_schedule` plans the runs
so that the last one lands exactly on the targets. :func:`reduce_layers`
gives the student fewer propagation layers, folding their weights
(:func:`fold_layer_weights`).
"""
import copy
import math
from typing import TYPE_CHECKING, List, Optional, Tuple

import torch
from torch import Tensor

from pyg_qgnn.transforms._edges import ranks_within_groups

if TYPE_CHECKING:  # the model module imports pyg_qgnn.prune (its masks)
    from pyg_qgnn.nn.models.lightgnn import LightGNN

SCORES = ('magnitude', 'saliency', 'random')
ENTRY_SCOPES = ('node', 'table')
EDGE_SCOPES = ('user', 'graph')


def _check_fraction(name: str, value, upper_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not (0 < value <= 1) or (upper_open and value == 1):
        interval = '(0, 1)' if upper_open else '(0, 1]'
        raise ValueError(f"'{name}' must be a number in {interval} (got "
                         f"{value!r})")
    return float(value)


def pruning_schedule(keep: float, step: float) -> List[float]:
    r"""The preserved shares after each pruning run: :math:`R` runs, each
    dropping the same share of what remains, the last landing on
    :obj:`keep` exactly (:math:`keep^{r/R}`). :math:`R` is the number of
    runs that dropping :obj:`step` per run needs, one fewer when that
    misses :obj:`keep` by less than a tenth of a run (so
    :math:`0.85^5 = 0.4437` reaches 0.44 in 5 runs, as in the paper).
    :obj:`keep=1` needs no run: :obj:`[]`.

    Example: :obj:`pruning_schedule(0.33, 0.2)` is about
    :obj:`[0.801, 0.642, 0.514, 0.412, 0.33]`."""
    keep = _check_fraction('keep', keep)
    step = _check_fraction('step', step, upper_open=True)
    if keep == 1:
        return []
    runs = max(1, math.ceil(math.log(keep) / math.log(1 - step) - 0.1))
    return [keep ** (run / runs) for run in range(1, runs)] + [keep]


def joint_schedule(edge_keep: float, edge_step: float, entry_keep: float,
                   entry_step: float) -> List[Tuple[float, float]]:
    r"""The edge and entry schedules run side by side: :obj:`(edge share,
    entry share)` after each run, both spread over the runs the longer of
    the two :func:`pruning_schedule` needs."""
    runs = max(len(pruning_schedule(edge_keep, edge_step)),
               len(pruning_schedule(entry_keep, entry_step)))
    return [(edge_keep ** (run / runs), entry_keep ** (run / runs))
            for run in range(1, runs + 1)]


def keep_top(score: Tensor, current: Tensor, count: int,
             generator: Optional[torch.Generator] = None) -> Tensor:
    r"""The boolean mask that keeps the :obj:`count` entries of
    :obj:`current` with the largest :math:`|score|` (ties: the earlier
    position), or :obj:`count` of them drawn at random with
    :obj:`score=None`. Entries outside :obj:`current` stay dropped."""
    flat = current.reshape(-1)
    kept = flat.nonzero().view(-1)
    if not 0 <= count <= kept.numel():
        raise ValueError(f"'count' must be in [0, {kept.numel()}] (got "
                         f"{count})")
    if score is None:
        order = torch.randperm(kept.numel(), generator=generator)
    else:
        values = score.reshape(-1)[kept].abs()
        order = torch.sort(-values, stable=True).indices
    out = torch.zeros_like(flat)
    out[kept[order[:count].to(kept.device)]] = True
    return out.view_as(current)


def keep_top_per_group(score: Optional[Tensor], current: Tensor, count: int,
                       group: Tensor,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    r"""The boolean mask that keeps :obj:`count` entries of
    :obj:`current`, the same share of every group's kept entries: each
    entry's rank by :math:`|score|` within its group (0 for the largest) is
    turned into the share :math:`(r + \frac12) / n_g` of the group's
    :math:`n_g` kept entries, and the :obj:`count` smallest shares are kept
    (equal shares: larger :math:`|score|` first, then the earlier
    position). Groups of equal size thus keep counts that differ by at most
    one; a random draw with :obj:`score=None`. Entries outside
    :obj:`current` stay dropped.

    Args:
        score (torch.Tensor, optional): One score per entry, shaped like
            :obj:`current`.
        current (torch.Tensor): The boolean mask now kept.
        count (int): How many entries to keep.
        group (torch.Tensor): The group id :math:`\geq 0` of every entry of
            the flattened :obj:`current` (e.g. an edge's user, an entry's
            row).
        generator (torch.Generator, optional): For the random draw.
    """
    flat = current.reshape(-1)
    if group.shape != flat.shape:
        raise ValueError(f"'group' must hold one id per entry, shape "
                         f"{tuple(flat.shape)} (got {tuple(group.shape)})")
    kept = int(flat.sum())
    if not 0 <= count <= kept:
        raise ValueError(f"'count' must be in [0, {kept}] (got {count})")
    if score is None:
        score = torch.rand(flat.shape, generator=generator)
    score = score.reshape(-1).to(flat.device)
    if score.numel() != flat.numel():
        raise ValueError(f"'score' must hold one value per entry, shape "
                         f"{tuple(current.shape)} (got {tuple(score.shape)})")
    magnitude = torch.where(flat, score.abs(),
                            torch.full_like(score, -float('inf')))
    # dropped entries rank last, so a kept one's rank is among the kept
    rank = ranks_within_groups(group, magnitude).double()
    kept_sizes = torch.bincount(group[flat], minlength=torch.bincount(
        group, minlength=1).numel())
    share = (rank + 0.5) / kept_sizes[group].clamp(min=1)
    share = torch.where(flat, share, torch.full_like(share, float('inf')))
    by_size = torch.sort(-magnitude, stable=True).indices
    chosen = by_size[torch.sort(share[by_size], stable=True).indices]
    out = torch.zeros_like(flat)
    out[chosen[:count]] = True
    return out.view_as(current)


@torch.no_grad()
def prune_entries(model: 'LightGNN', keep: float, score: str = 'magnitude',
                  generator: Optional[torch.Generator] = None,
                  scope: str = 'node') -> int:
    r"""Sets the entry mask of :obj:`model` to keep
    :math:`\mathrm{round}(keep \cdot N d)` of its embedding entries: those
    of largest :math:`|e_{n,c}|` among the kept ones
    (:obj:`score="magnitude"`, the paper's), of largest
    :math:`|e_{n,c} \, \bar{e}_{n,c}|` (:obj:`"saliency"`, with
    :math:`\bar{\mathbf{e}}_n` the node's final embedding under the current
    masks), or a random draw (:obj:`"random"`, the "EmbP" ablation).
    Returns the number kept.

    The saliency is the entry's term in :math:`\mathbf{e}_n^{\top}
    \bar{\mathbf{e}}_n`: a node's items score through
    :math:`\bar{\mathbf{e}}_n`, so an entry that its propagated neighbours
    cancel matters less than its size says (Gowalla's float teacher, 2
    layers, the five pruning runs of the default schedule down to 44% of
    edges and 33% of entries, no training: validation Recall@20 0.179
    against 0.174 by magnitude).

    :obj:`scope="node"` gives every node the same share of entries (its
    largest, by :func:`keep_top_per_group`); :obj:`"table"` sets one
    threshold over the whole table, which empties the rows of nodes with
    small embeddings (on Gowalla's float teacher, keeping 33%: validation
    Recall@20 0.184 per node against 0.175 for one threshold, 3 layers;
    Recall averages over users, and a user with an empty row has no
    ranking)."""
    keep = _check_fraction('keep', keep)
    if score not in SCORES:
        raise ValueError(f"'score' must be one of {SCORES} (got {score!r})")
    if scope not in ENTRY_SCOPES:
        raise ValueError(f"'scope' must be one of {ENTRY_SCOPES} (got "
                         f"{scope!r})")
    count = round(keep * model.entry_mask.numel())
    values = None if score == 'random' else model.raw_embedding
    if score == 'saliency':
        values = values * model.get_embedding()
    current = model.entry_mask
    if scope == 'table':
        mask = keep_top(values, current, count, generator)
    else:
        rows = torch.arange(current.size(0), device=current.device)
        mask = keep_top_per_group(values, current, count,
                                  rows.repeat_interleave(current.size(1)),
                                  generator)
    model.set_entry_mask(mask)
    return count


@torch.no_grad()
def prune_pairs(model: 'LightGNN', keep: float, score: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None,
                scope: str = 'user') -> int:
    r"""Sets the edge mask of :obj:`model` to keep
    :math:`\mathrm{round}(keep \cdot E)` of its candidate edges: those of
    largest :math:`|score|` (one decision weight per candidate edge, e.g.
    :func:`~pyg_qgnn.distill.lightgnn.importance_scores`) among the kept
    ones, or a random draw with :obj:`score=None` (the "EdgeP" ablation).
    Returns the number kept.

    :obj:`scope="user"` keeps the same share of every user's edges (by
    :func:`keep_top_per_group`); :obj:`"graph"` one threshold over all
    edges, which strips the users whose interactions score low (Gowalla's
    float teacher, 2 layers, keeping 44% of edges by the teacher's
    prediction and 33% of entries per node: validation Recall@20 0.174
    per user against 0.161)."""
    keep = _check_fraction('keep', keep)
    if scope not in EDGE_SCOPES:
        raise ValueError(f"'scope' must be one of {EDGE_SCOPES} (got "
                         f"{scope!r})")
    if score is not None and score.shape != model.edge_mask.shape:
        raise ValueError(f"'score' must hold one value per candidate edge, "
                         f"shape {tuple(model.edge_mask.shape)} (got "
                         f"{tuple(score.shape)})")
    count = round(keep * model.edge_mask.numel())
    if scope == 'graph':
        mask = keep_top(score, model.edge_mask, count, generator)
    else:
        mask = keep_top_per_group(score, model.edge_mask, count,
                                  model.pairs[0], generator)
    model.set_edge_mask(mask)
    return count


def pair_lookup(query: Tensor, reference: Tensor, num_items: int) -> Tensor:
    r"""For each :obj:`(user, item)` pair of :obj:`query`, its position
    among the pairs of :obj:`reference` (unique pairs), or :obj:`-1`."""
    ref_key = reference[0] * num_items + reference[1]
    order = torch.argsort(ref_key)
    sorted_key = ref_key[order]
    key = query[0] * num_items + query[1]
    pos = torch.searchsorted(sorted_key, key).clamp(max=max(
        sorted_key.numel() - 1, 0))
    if sorted_key.numel() == 0:
        return torch.full_like(key, -1)
    found = sorted_key[pos] == key
    return torch.where(found, order[pos], torch.full_like(pos, -1))


@torch.no_grad()
def teacher_edge_terms(student: 'LightGNN', teacher: torch.nn.Module,
                       teacher_emb: Tensor
                       ) -> Tuple[Optional[Tensor], Tensor]:
    r"""The intermediate model's knowledge about each candidate edge of
    :obj:`student` (Eq. 8): its learned weight :math:`w^t` of the same
    pair (:obj:`None` when :obj:`teacher` is no
    :class:`~pyg_qgnn.nn.models.LightGNN`; 0 for a pair it lacks or
    pruned) and its prediction :math:`\tilde{\mathbf{e}}^{t\top}_i
    \tilde{\mathbf{e}}^t_j` from its final embeddings :obj:`teacher_emb`."""
    from pyg_qgnn.nn.models.lightgnn import LightGNN
    pairs = student.pairs
    score = (teacher_emb[pairs[0]] *
             teacher_emb[student.num_users + pairs[1]]).sum(-1)
    if not isinstance(teacher, LightGNN):
        return None, score
    where = pair_lookup(pairs, teacher.pairs, student.num_items)
    found = where >= 0
    weight = torch.zeros(pairs.size(1), dtype=teacher.edge_weight.dtype,
                         device=pairs.device)
    index = where[found]
    weight[found] = teacher.edge_weight[index] * teacher.edge_mask[index]
    return weight, score


def reduce_layers(model: 'LightGNN', num_layers: int) -> 'LightGNN':
    r"""A copy of :obj:`model` (weights and masks) with
    :obj:`num_layers` propagation layers (layer reduction, Sec. 3.1.2).
    The layer weights of :func:`fold_layer_weights` keep the final
    embedding as smooth as the deeper model's."""
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or \
            num_layers < 0:
        raise ValueError(f"'num_layers' must be a non-negative int (got "
                         f"{num_layers!r})")
    out = copy.deepcopy(model)
    out.num_layers = num_layers
    out.alpha = fold_layer_weights(model.alpha, num_layers)
    return out


def fold_layer_weights(alpha: Tensor, num_layers: int) -> Tensor:
    r"""Layer weights for :obj:`num_layers` layers from a model's
    :obj:`alpha`: the weights of the dropped layers go to the deepest kept
    one (the nearest to them in smoothness), so :math:`(\frac14, \frac14,
    \frac14, \frac14)` becomes :math:`(\frac14, \frac14, \frac12)`. On
    Gowalla's 3-layer float teacher, the 2-layer model this gives has
    validation Recall@20 0.193 against 0.172 with equal weights
    (teacher 0.196). Grown models give the new layers weight 0."""
    alpha = alpha.detach().reshape(-1).float()
    out = torch.zeros(num_layers + 1, device=alpha.device)
    kept = min(num_layers + 1, alpha.numel())
    out[:kept] = alpha[:kept]
    out[kept - 1] += alpha[kept:].sum()
    return out
