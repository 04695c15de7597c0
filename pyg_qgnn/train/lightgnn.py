r"""The LightGNN pipeline (`Chen et al., WSDM 2025
<https://arxiv.org/abs/2501.03228>`_): a float LightGCN teacher, an
intermediate :class:`~pyg_qgnn.nn.models.LightGNN` on the high-order
augmented graph (Eq. 7) that learns edge weights :math:`\mathbf{W}^t` under
the teacher's bilevel distillation, and a student on the observed graph,
pruned run by run (Sec. 3.1) under the intermediate model's distillation
(Eq. 5, 6, 8) and the uniformity constraint (Eq. 9-10), with the total
loss of Eq. 11.

Unlike the authors' code, which picks each run's masks at the epoch of
best *test* recall, every selection here is made on the validation pairs.
"""
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from pyg_qgnn.datasets.recsys import RecSysData
from pyg_qgnn.distill.lightgnn import (
    embedding_kd_loss,
    prediction_kd_loss,
    triple_margins,
    uniformity_loss,
)
from pyg_qgnn.metrics import UserItems, ranking_metrics
from pyg_qgnn.nn.models.lightgnn import LightGNN
from pyg_qgnn.selection import Selection
from pyg_qgnn.train.recsys import (
    TripleSampler,
    bpr_loss,
    check_split,
    node_embeddings,
    split_metrics,
)

KS = (20, 40)


@dataclass
class LightGNNConfig:
    r"""Settings of the LightGNN pipeline; the defaults follow the paper
    and the authors' Gowalla script where they say (:math:`\tau`,
    :math:`\lambda`, :math:`\beta`, per-run shares), else LightGCN's.

    The ablation switches reproduce the variants of Table 3:
    :obj:`entry_score="random"` (~EmbP), :obj:`edge_score="random"`
    (~EdgeP; both: ~BothP), :obj:`learn_edge_weight=False` (BnEdge),
    :obj:`bilevel=False` (-BiAln: no Eq. 5-6 terms), :obj:`intermediate=
    False` (-IntKD: the student learns from the teacher directly) and
    :obj:`importance=False` (-ImpD: :math:`\beta_1 = \beta_2 = 0`).

    Two defaults depart from the paper, both measured on LightGNN's Yelp
    split with the float teacher's table and no training (validation
    Recall@20; teacher 0.0749): Eq. 4's residual term adds
    :math:`\mathbf{E}_{l-1}` unnormalized, which gives 0.0613 against
    0.0659 without it (:obj:`residual=False`; the authors' code realises it
    as a normalized self-loop instead); and the augmented graph keeps at
    most :obj:`max_per_node=4` new items per user (0.0715; 16: 0.0687),
    since every added edge dilutes the normalized weight of the observed
    ones.

    The pruning itself departs in three measured ways (Gowalla's float
    teacher, no training, validation Recall@20 0.196 with 3 layers):
    the student keeps the same share of every user's edges
    (:obj:`edge_scope="user"`) and of every node's entries
    (:obj:`entry_scope="node"`) rather than one threshold over all of
    them, which empties cold users (2 layers, 44% of edges and 33% of
    entries: 0.174 against 0.145; per user only 0.161, per node only
    0.161); its layer weights fold the teacher's
    (:func:`~pyg_qgnn.prune.lightgnn.fold_layer_weights`; unpruned, 2
    layers: 0.193 against 0.172 with equal weights); and after the last
    pruning run they are chosen on validation
    (:func:`tune_layer_weights`, :obj:`tune_alpha`). :obj:`edge_scope=
    "graph"`, :obj:`entry_scope="table"`, :obj:`tune_alpha=False` give the
    paper's shape. Eq. 8's prediction term is standardized before its
    sigmoid (:obj:`standardize_importance`): raw, it saturates at 1 on
    every training edge of a trained LightGCN, and the edges are then
    pruned by the student's own, barely trained weights (Gowalla, the
    student distilled from the teacher for 3 epochs, then pruned to 44% of
    edges and 33% of entries in one run: validation Recall@20 0.132 after
    it, against 0.174 pruning by the teacher's predictions alone).
    Entries go by saliency :math:`|e_{n,c} \bar{e}_{n,c}|` rather than
    magnitude (:obj:`entry_score`, see
    :func:`~pyg_qgnn.prune.lightgnn.prune_entries`; the pruning runs of
    the default schedule, no training: 0.179 against 0.174), and
    :obj:`"magnitude"` gives the paper's.

    With :obj:`select_source`, the student distils from the intermediate
    model only when that scores at least the teacher's validation
    Recall@20, else from the teacher (as -IntKD): Eq. 8 ranks the edges
    by the source's predictions, and a weaker source ranks them worse
    (Gowalla, the short schedule of the README: the intermediate model
    reaches 0.173 against the teacher's 0.196, and its student 0.174
    against 0.182 from the teacher).

    The student holds its edge values in :obj:`edge_value_dtype`
    (:obj:`"float16"`: two bytes per kept edge in its deployed form, which
    computes the same numbers; :obj:`"float32"` for the paper's storage).
    """
    embedding_dim: int = 64
    student_layers: int = 2
    intermediate_layers: int = 2
    edge_keep: float = 0.44
    entry_keep: float = 0.33
    edge_step: float = 0.15
    entry_step: float = 0.2
    run_epochs: int = 10
    final_epochs: int = 30
    intermediate_epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 4096
    reg: float = 1e-4
    edge_reg: float = 1e-8
    lambda_bpr: float = 1.0
    lambda_pred: float = 1.0
    lambda_emb: float = 1e-2
    lambda_unif: float = 1e-4
    tau_pred: float = 0.03
    tau_emb: float = 0.1
    tau_unif: float = 1.0
    beta1: float = 0.05
    beta2: float = 1.0
    standardize_importance: bool = True
    delta: int = 2
    hops: int = 3
    max_per_node: Optional[int] = 4
    residual: bool = False
    kd_triples: int = 16384
    contrast_anchors: Optional[int] = 1024
    contrast_candidates: Optional[int] = 2048
    eval_every: int = 1
    patience: Optional[int] = 5
    entry_score: str = 'saliency'
    entry_scope: str = 'node'
    edge_scope: str = 'user'
    tune_alpha: bool = True
    edge_value_dtype: str = 'float16'
    edge_score: str = 'importance'
    learn_edge_weight: bool = True
    bilevel: bool = True
    intermediate: bool = True
    select_source: bool = True
    importance: bool = True
    seed: int = 0


#: Ablation name -> (label, config changes): the rows of Table 3.
ABLATIONS = {
    'lightgnn': ('LightGNN', {}),
    'random-emb': ('~EmbP (random entries)', dict(entry_score='random')),
    'random-edge': ('~EdgeP (random edges)', dict(edge_score='random')),
    'random-both': ('~BothP (random both)', dict(entry_score='random',
                                                 edge_score='random')),
    'binary-edge': ('BnEdge (binary edge weights)',
                    dict(learn_edge_weight=False)),
    'no-bilevel': ('-BiAln (no bilevel alignment)', dict(bilevel=False)),
    'no-intermediate': ('-IntKD (no intermediate KD layer)',
                        dict(intermediate=False)),
    'no-importance': ('-ImpD (no importance distillation)',
                      dict(importance=False)),
}


@dataclass
class StageResult:
    r"""Validation metrics of the selected epoch, its epoch, epochs run,
    training seconds and the validation curve of one training stage."""
    val: Dict[str, float]
    epoch: int
    epochs_run: int
    seconds: float
    history: List[dict] = field(default_factory=list)


def _sample(count: int, limit: Optional[int], gen: torch.Generator,
            device) -> Optional[Tensor]:
    if limit is None or limit >= count:
        return None
    return torch.randint(count, (limit, ), generator=gen).to(device)


def lightgnn_step_loss(model: LightGNN, users: Tensor, pos: Tensor,
                       neg: Tensor, teacher_emb: Optional[Tensor],
                       config: LightGNNConfig, gen: torch.Generator,
                       uniformity: bool) -> Tuple[Tensor, Dict[str, float]]:
    r"""The multi-task loss of Eq. 11 on one batch of BPR triples:
    :math:`\lambda_0 \mathcal{L}_{bpr} + \lambda_1 \mathcal{L}_{p-kd} +
    \lambda_2 \mathcal{L}_{e-kd} + \lambda_3 \mathcal{L}_{u-reg}` plus the
    L2 terms (:obj:`reg` on the batch's layer-0 rows as in LightGCN,
    :obj:`edge_reg` on the kept edge weights). Returns the loss and its
    parts."""
    c, num_users = config, model.num_users
    out = model.get_embedding()
    user_emb = out[users]
    pos_scores = (user_emb * out[num_users + pos]).sum(-1)
    neg_scores = (user_emb * out[num_users + neg[:, 0]]).sum(-1)
    ego = model.embedding.weight[torch.cat([users, num_users + pos,
                                            num_users + neg[:, 0]])]
    parts = {'bpr': bpr_loss(pos_scores, neg_scores.view(-1, 1), ego, c.reg)}
    if c.edge_reg and model.learn_edge_weight:
        parts['edge_l2'] = c.edge_reg * model.kept_weight().pow(2).sum()
    device = out.device
    if teacher_emb is not None and c.bilevel:
        triples = torch.stack([
            torch.randint(num_users, (c.kd_triples, ), generator=gen),
            torch.randint(model.num_items, (c.kd_triples, ), generator=gen),
            torch.randint(model.num_items, (c.kd_triples, ), generator=gen),
        ]).to(device)
        parts['pred_kd'] = c.lambda_pred * prediction_kd_loss(
            triple_margins(out, triples, num_users),
            triple_margins(teacher_emb, triples, num_users), c.tau_pred)
        parts['emb_kd'] = c.lambda_emb * sum(
            embedding_kd_loss(out[side], teacher_emb[side], anchors,
                              _sample(n, c.contrast_candidates, gen, device),
                              c.tau_emb)
            for side, anchors, n in _sides(model, users, pos, c, gen))
    if uniformity and c.lambda_unif:
        masks = model.entry_mask
        parts['uniformity'] = c.lambda_unif * sum(
            uniformity_loss(out[side], masks[side], anchors, c.delta,
                            _sample(n, c.contrast_candidates, gen, device),
                            c.tau_unif)
            for side, anchors, n in _sides(model, users, pos, c, gen))
    parts['bpr'] = c.lambda_bpr * parts['bpr']
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def _sides(model: LightGNN, users: Tensor, pos: Tensor,
           config: LightGNNConfig, gen: torch.Generator):
    # The batch's distinct users and positive items, at most
    # contrast_anchors of each (the (anchors, candidates) similarity
    # matrices dominate a CPU step otherwise).
    U = model.num_users
    sides = []
    for side, nodes, count in ((slice(0, U), users, U),
                               (slice(U, None), pos, model.num_items)):
        nodes = torch.unique(nodes)
        limit = config.contrast_anchors
        if limit is not None and nodes.numel() > limit:
            pick = torch.randperm(nodes.numel(), generator=gen)[:limit]
            nodes = nodes[pick.to(nodes.device)]
        sides.append((side, nodes, count))
    return sides


def evaluate_lightgnn(model: nn.Module, data: RecSysData, split: str = 'test',
                      ks=KS) -> Dict[str, float]:
    r"""Full-ranking Recall@K / NDCG@K of a LightGNN (or of any model with
    :obj:`get_embedding()`), training items masked (and validation items
    for the test split)."""
    check_split(split)
    users, items = lightgnn_embeddings(model, data)
    return split_metrics(users, items, data, split, ks)


@torch.no_grad()
def lightgnn_embeddings(model: nn.Module, data: RecSysData
                        ) -> Tuple[Tensor, Tensor]:
    if not isinstance(model, LightGNN):  # a float LightGCN teacher
        return node_embeddings(model, data)
    model.eval()
    out = model.get_embedding()
    return out[:data.num_users], out[data.num_users:]


def train_lightgnn(model: LightGNN, data: RecSysData, epochs: int,
                   config: LightGNNConfig,
                   teacher_emb: Optional[Tensor] = None,
                   uniformity: bool = False,
                   progress: Optional[Callable[[dict], None]] = None
                   ) -> StageResult:
    r"""Trains :obj:`model` (its masks held) with :func:`lightgnn_step_loss`
    and Adam for at most :obj:`epochs` epochs, evaluating validation
    Recall@20 every :obj:`config.eval_every` epochs, and restores the best
    evaluated state (early stopping after :obj:`config.patience`
    evaluations without improvement). The state it starts from is
    evaluated too (epoch 0), so a stage never hands on a model worse on
    validation than the one it got (on Gowalla, the first fine-tuning
    epoch after the layer weights were tuned took validation Recall@20
    from 0.1813 to 0.1808)."""
    c = config
    device = model.raw_embedding.device
    sampler = TripleSampler(data, c.batch_size, 1, c.seed)
    gen = torch.Generator().manual_seed(c.seed + 1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=c.lr)
    exclude = UserItems(data.train.to(device), data.num_users)
    truth = UserItems(data.val.to(device), data.num_users)
    selection, history, stale, seconds = Selection(), [], 0, 0.0
    metrics: Dict[int, Dict[str, float]] = {}  # epoch -> validation

    def evaluate(entry: dict) -> bool:
        users_out, items_out = lightgnn_embeddings(model, data)
        val = metrics[entry['epoch']] = ranking_metrics(
            users_out, items_out, truth, exclude, KS)
        entry.update(val)
        history.append(entry)
        if progress is not None:
            progress(entry)
        return selection.offer(model, val['recall@20'], entry['epoch'])

    evaluate(dict(epoch=0, seconds=0.0))
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        start, sums = time.perf_counter(), {}
        for users, pos, neg in sampler:
            users, pos, neg = users.to(device), pos.to(device), neg.to(device)
            optimizer.zero_grad()
            loss, parts = lightgnn_step_loss(model, users, pos, neg,
                                             teacher_emb, c, gen, uniformity)
            loss.backward()
            optimizer.step()
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value / len(sampler)
        seconds += time.perf_counter() - start
        if epoch % c.eval_every and epoch != epochs:
            continue
        if evaluate(dict(epoch=epoch, seconds=seconds, **sums)):
            stale = 0
        else:
            stale += 1
            if c.patience is not None and stale >= c.patience:
                break
    selection.restore(model)
    return StageResult(metrics[selection.epoch], selection.epoch, epoch,
                       seconds, history)


@torch.no_grad()
def tune_layer_weights(model: LightGNN, data: RecSysData, step: float = 0.1,
                       min_step: float = 0.05, split: str = 'val') -> float:
    r"""Chooses the layer weights :math:`\alpha` of :obj:`model` on the
    :obj:`split` pairs: a coordinate search on the simplex that moves
    :obj:`step` of weight from one layer to another while Recall@20
    improves, then halves the step down to :obj:`min_step`. Pruning
    changes how smooth each layer's output is, so the weights that suited
    the unpruned model no longer do (Gowalla, 2 layers, 44% of edges and
    33% of entries kept: validation Recall@20 0.174 with :math:`(\frac14,
    \frac14, \frac12)`, 0.182 with :math:`(0.1, 0.2, 0.7)`). Returns the
    Recall@20 reached; :math:`\alpha` stays a buffer, stored with the
    model."""
    if not 0 < min_step <= step <= 1:
        raise ValueError(f"'step' and 'min_step' must satisfy 0 < min_step "
                         f"<= step <= 1 (got {step!r}, {min_step!r})")

    def recall(alpha: Tensor) -> float:
        model.alpha.copy_(alpha)
        return evaluate_lightgnn(model, data, split, ks=(20, ))['recall@20']

    alpha = model.alpha.clone()
    best = recall(alpha)
    while step >= min_step * (1 - 1e-6):
        improved = False
        for source in range(alpha.numel()):
            for target in range(alpha.numel()):
                if source == target or alpha[source] < step * (1 - 1e-6):
                    continue
                trial = alpha.clone()
                trial[source] -= step
                trial[target] += step
                value = recall(trial)
                if value > best:
                    best, alpha, improved = value, trial, True
        if not improved:
            step /= 2
    model.alpha.copy_(alpha)
    return best
