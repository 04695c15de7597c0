r"""The hierarchical distillation losses of `LightGNN
<https://arxiv.org/abs/2501.03228>`_ (WSDM 2025), Eq. 5-11.

Every loss is a mean over its anchors or triples rather than the papers'
sum, so its weight :math:`\lambda` does not scale with the batch size.
Eq. 6 and Eq. 9 normalize over a candidate set: all nodes of the anchor's
side by default, or a sample of them (:obj:`candidates`) to bound the cost
of a step; the anchor itself always takes part.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_qgnn.distill.logits import check_temperature


def triple_margins(emb: Tensor, triples: Tensor, num_users: int) -> Tensor:
    r""":math:`\epsilon_{\mathbf{v}} = \hat{y}_{i,j_1} - \hat{y}_{i,j_2}`
    for triples :math:`\mathbf{v} = (u_i, v_{j_1}, v_{j_2})`, an
    :obj:`(3, B)` tensor of user and item ids, from the final embeddings
    :obj:`emb` of all nodes (users first)."""
    users = emb[triples[0]]
    first, second = emb[num_users + triples[1]], emb[num_users + triples[2]]
    return (users * (first - second)).sum(-1)


def prediction_kd_loss(student_margin: Tensor, teacher_margin: Tensor,
                       temperature: float = 0.03) -> Tensor:
    r"""Prediction-level distillation (Eq. 5): the binary cross-entropy of
    the student's :math:`\sigma(\epsilon^s / \tau)` against the teacher's
    :math:`\sigma(\epsilon^t / \tau)`, averaged over the triples.

    .. math::
        \mathcal{L}_{p\text{-}kd} = -\sigma(\epsilon^t / \tau)
        \log \sigma(\epsilon^s / \tau) - \bar{\sigma}(\epsilon^t / \tau)
        \log \bar{\sigma}(\epsilon^s / \tau)

    Args:
        student_margin (torch.Tensor): :math:`\epsilon^s`, :math:`(B)`.
        teacher_margin (torch.Tensor): :math:`\epsilon^t`, :math:`(B)`.
        temperature (float, optional): :math:`\tau`. (default: :obj:`0.03`)
    """
    tau = check_temperature(temperature)
    if student_margin.shape != teacher_margin.shape:
        raise ValueError(f"'student_margin' and 'teacher_margin' must have "
                         f"the same shape (got {tuple(student_margin.shape)} "
                         f"and {tuple(teacher_margin.shape)})")
    target = torch.sigmoid(teacher_margin.detach() / tau)
    return F.binary_cross_entropy_with_logits(student_margin / tau, target)


def _candidates(candidates: Optional[Tensor], count: int,
                device) -> Tensor:
    if candidates is None:
        return torch.arange(count, device=device)
    return candidates.to(device).long()


def _contrast(anchor_logit: Tensor, logits: Tensor, is_anchor: Tensor,
              positive: Optional[Tensor] = None) -> Tensor:
    # -log( sum_{positives, anchor included} e^l / sum_{all, anchor
    # included} e^l ), each anchor counted once however often it was drawn.
    others = logits.masked_fill(is_anchor, -float('inf'))
    total = torch.logsumexp(torch.cat([anchor_logit.view(-1, 1), others],
                                      dim=1), dim=1)
    if positive is None:
        return (total - anchor_logit).mean()
    kept = others.masked_fill(~positive, -float('inf'))
    numerator = torch.logsumexp(torch.cat([anchor_logit.view(-1, 1), kept],
                                          dim=1), dim=1)
    return (total - numerator).mean()


def embedding_kd_loss(student: Tensor, teacher: Tensor, anchors: Tensor,
                      candidates: Optional[Tensor] = None,
                      temperature: float = 0.1) -> Tensor:
    r"""Embedding-level distillation (Eq. 6): InfoNCE with the teacher's
    embedding of node :math:`i` as the query and the student's embeddings
    as keys, positive the student's own :math:`i`, by cosine similarity.

    .. math::
        \mathcal{L}_{e\text{-}kd} = -\log \frac{\exp(s_{i,i} / \tau)}
        {\sum_{i'} \exp(s_{i',i} / \tau)}, \qquad
        s_{i',i} = \cos(\tilde{\mathbf{e}}^s_{i'}, \tilde{\mathbf{e}}^t_i)

    Call it once for the users and once for the items (the two sums of
    Eq. 6).

    Args:
        student (torch.Tensor): Student embeddings of one side, :math:`(N,
            d)`.
        teacher (torch.Tensor): Teacher embeddings of the same nodes.
        anchors (torch.Tensor): The nodes :math:`i` of the batch.
        candidates (torch.Tensor, optional): The :math:`i'` of the
            denominator (the anchor is always among them). (default: all)
        temperature (float, optional): :math:`\tau`. (default: :obj:`0.1`)
    """
    tau = check_temperature(temperature)
    if student.shape != teacher.shape:
        raise ValueError(f"'student' and 'teacher' must have the same shape "
                         f"(got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)})")
    candidates = _candidates(candidates, student.size(0), student.device)
    anchors = anchors.long()
    query = F.normalize(teacher.detach()[anchors], dim=-1)
    keys = F.normalize(student, dim=-1)
    logits = query @ keys[candidates].t() / tau
    anchor_logit = (query * keys[anchors]).sum(-1) / tau
    is_anchor = anchors.view(-1, 1) == candidates.view(1, -1)
    return _contrast(anchor_logit, logits, is_anchor)


def mask_positive_sets(anchor_masks: Tensor, candidate_masks: Tensor,
                       delta: int) -> Tensor:
    r"""The positive sets of Eq. 10 as a boolean :math:`(B, C)` matrix:
    :math:`c \in \mathcal{S}_a` when :math:`\|\mathbb{e}_a \odot
    \mathbb{e}_c\|_0 \ge \max(\|\mathbb{e}_a\|_0, \|\mathbb{e}_c\|_0) -
    \delta` for the binary pruning masks :math:`\mathbb{e}` of the layer-0
    embeddings."""
    if isinstance(delta, bool) or not isinstance(delta, int) or delta < 0:
        raise ValueError(f"'delta' must be a non-negative int (got "
                         f"{delta!r})")
    a, c = anchor_masks.float(), candidate_masks.float()
    shared = a @ c.t()
    need = torch.maximum(a.sum(-1).view(-1, 1), c.sum(-1).view(1, -1))
    return shared >= need - delta


def uniformity_loss(emb: Tensor, masks: Tensor, anchors: Tensor,
                    delta: int, candidates: Optional[Tensor] = None,
                    temperature: float = 1.0) -> Tensor:
    r"""The adaptive uniformity constraint (Eq. 9) of one side: pulls each
    anchor towards the nodes whose pruning masks are alike (Eq. 10, the
    anchor itself included) and pushes it from all others, by inner
    product.

    .. math::
        \mathcal{L}_{u\text{-}reg} = -\log \frac{\sum_{i_1 \in
        \mathcal{S}_i} \exp(\tilde{\mathbf{e}}_{i_1}^{\top}
        \tilde{\mathbf{e}}_i / \tau)}{\sum_{i_2} \exp(
        \tilde{\mathbf{e}}_i^{\top} \tilde{\mathbf{e}}_{i_2} / \tau)}

    Args:
        emb (torch.Tensor): Final embeddings of one side, :math:`(N, d)`.
        masks (torch.Tensor): Boolean layer-0 entry masks, :math:`(N, d)`.
        anchors (torch.Tensor): The nodes :math:`i` of the batch.
        delta (int): :math:`\delta` of Eq. 10.
        candidates (torch.Tensor, optional): The :math:`i_1, i_2` ranged
            over. (default: all)
        temperature (float, optional): :math:`\tau`. (default: :obj:`1.0`)
    """
    tau = check_temperature(temperature)
    if masks.shape != emb.shape:
        raise ValueError(f"'masks' must have the shape of 'emb' "
                         f"{tuple(emb.shape)} (got {tuple(masks.shape)})")
    candidates = _candidates(candidates, emb.size(0), emb.device)
    anchors = anchors.long()
    query = emb[anchors]
    logits = query @ emb[candidates].t() / tau
    anchor_logit = (query * query).sum(-1) / tau
    is_anchor = anchors.view(-1, 1) == candidates.view(1, -1)
    positive = mask_positive_sets(masks[anchors], masks[candidates], delta)
    return _contrast(anchor_logit, logits, is_anchor, positive)


def importance_scores(student_weight: Tensor,
                      teacher_weight: Optional[Tensor] = None,
                      teacher_score: Optional[Tensor] = None,
                      beta1: float = 0.05, beta2: float = 1.0,
                      standardize: bool = False) -> Tensor:
    r"""Importance distillation (Eq. 8): the decision weight of each
    student edge :math:`(u_i, v_j)`,

    .. math::
        \tilde{w}^s_{i,j} = w^s_{i,j} + \beta_1 w^t_{i,j} + \beta_2
        \sigma(\tilde{\mathbf{e}}^{t\top}_i \tilde{\mathbf{e}}^t_j)

    With :obj:`standardize=True` the predictions are standardized over the
    edges (zero mean, unit deviation) before :math:`\sigma`. A trained
    LightGCN scores its training edges far into :math:`\sigma`'s flat
    tail (Gowalla's 3-layer teacher: 6.3 to 15.7 between the 1st and 99th
    percentiles, so :math:`\sigma \in [0.998, 1]`), and the raw term then
    orders nothing: the decision falls to the student's own weights.

    Args:
        student_weight (torch.Tensor): :math:`w^s`, :math:`(E)`.
        teacher_weight (torch.Tensor, optional): :math:`w^t` of the same
            edges in the intermediate model; :obj:`None` drops the term.
        teacher_score (torch.Tensor, optional): The intermediate model's
            prediction :math:`\tilde{\mathbf{e}}^{t\top}_i
            \tilde{\mathbf{e}}^t_j` per edge; :obj:`None` drops the term.
        beta1 (float, optional): :math:`\beta_1`. (default: :obj:`0.05`)
        beta2 (float, optional): :math:`\beta_2`. (default: :obj:`1.0`)
        standardize (bool, optional): Standardize the predictions before
            :math:`\sigma`. (default: :obj:`False`)
    """
    out = student_weight.detach().clone()
    for name, extra, beta, fn in (
            ('teacher_weight', teacher_weight, beta1, lambda t: t),
            ('teacher_score', teacher_score, beta2,
             _standard_sigmoid if standardize else torch.sigmoid)):
        if extra is None or beta == 0:
            continue
        if extra.shape != out.shape:
            raise ValueError(f"'{name}' must have one value per edge, shape "
                             f"{tuple(out.shape)} (got {tuple(extra.shape)})")
        out = out + beta * fn(extra.detach().to(out.dtype))
    return out


def _standard_sigmoid(score: Tensor) -> Tensor:
    spread = score.std() if score.numel() > 1 else score.new_zeros(())
    if not bool(spread > 0):
        return torch.full_like(score, 0.5)
    return torch.sigmoid((score - score.mean()) / spread)
