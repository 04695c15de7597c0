r"""Training and evaluating graph recommenders (LightGCN and its quantized
forms) on :class:`~pyg_qgnn.datasets.recsys.RecSysData`.

A recommender here is a module with :obj:`get_embedding(adj)` returning one
row per node (users first, then items), as
:class:`torch_geometric.nn.models.LightGCN` has. Training samples
:obj:`(user, positive item, negative items)` triples, minimizes BPR with L2
(Eq. 15 of GNAQ) and optionally LambdaLoss (Eq. 16, their sum Eq. 17),
evaluates full-ranking Recall@K / NDCG@K on the validation pairs, keeps the
best epoch (early stopping with :obj:`patience`) and scores the test pairs
once, with the selected weights. A model with :obj:`after_step(adj)` (GNAQ
re-assigning its codes) has it called after every optimizer step.
"""
import copy
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.models import LightGCN

from pyg_qgnn.datasets.recsys import RecSysData
from pyg_qgnn.metrics import UserItems, ranking_metrics
from pyg_qgnn.nn.conv.quant_lg_conv import QuantLGConv
from pyg_qgnn.nn.models.gnaq import QuantLightGCN
from pyg_qgnn.quantizers import IntegerQuantizer
from pyg_qgnn.quantizers.functional import check_bits
from pyg_qgnn.quantizers.node_aware import NodeAwareQuantizer
from pyg_qgnn.quantizers.packing import container_bits
from pyg_qgnn.selection import Selection
from pyg_qgnn.train.results import markdown_table, seed_everything, summarize

LOSSES = ('bpr', 'bpr+lambda')


def lightgcn(num_users: int, num_items: int, embedding_dim: int = 64,
             num_layers: int = 3, std: float = 0.1) -> LightGCN:
    r"""PyG's :class:`~torch_geometric.nn.models.LightGCN` for
    :obj:`num_users + num_items` nodes, its embeddings drawn from
    :math:`\mathcal{N}(0, \mathrm{std}^2)` as in the LightGCN reference code
    (PyG's Xavier default trains poorly), its layers
    :class:`~pyg_qgnn.nn.QuantLGConv` without quantizers: the same
    computation as :class:`LGConv` (tested) with a faster sparse backward.
    Layers take the pre-normalized :meth:`RecSysData.adjacency`."""
    for name, value in dict(embedding_dim=embedding_dim,
                            num_layers=num_layers).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"'{name}' must be a positive int (got "
                             f"{value!r})")
    model = LightGCN(num_users + num_items, embedding_dim, num_layers,
                     normalize=False)
    model.convs = nn.ModuleList(QuantLGConv(normalize=False)
                                for _ in range(num_layers))
    nn.init.normal_(model.embedding.weight, std=std)
    return model


class TripleSampler:
    r"""Training triples :obj:`(user, positive item, negative items)`: each
    epoch visits every training pair once in random order, with
    :obj:`num_negatives` items per pair drawn uniformly among those the user
    has no training interaction with.

    Args:
        data (RecSysData): The dataset.
        batch_size (int): Triples per batch.
        num_negatives (int, optional): Negatives per triple.
            (default: :obj:`1`)
        seed (int, optional): Seed of the sampling. (default: :obj:`0`)
    """
    def __init__(self, data: RecSysData, batch_size: int,
                 num_negatives: int = 1, seed: int = 0):
        for name, value in dict(batch_size=batch_size,
                                num_negatives=num_negatives).items():
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value < 1:
                raise ValueError(f"'{name}' must be a positive int (got "
                                 f"{value!r})")
        self.pairs = data.train
        self.num_items = data.num_items
        self.batch_size = batch_size
        self.num_negatives = num_negatives
        self.known = torch.unique(self.pairs[0] * data.num_items +
                                  self.pairs[1])
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(self.pairs.size(1) / self.batch_size)

    def _negatives(self, users: Tensor) -> Tensor:
        shape = (users.numel(), self.num_negatives)
        items = torch.randint(self.num_items, shape, generator=self.generator)
        for _ in range(10):  # redraw the rare hits on training items
            key = users.view(-1, 1) * self.num_items + items
            pos = torch.searchsorted(self.known, key).clamp(
                max=self.known.numel() - 1)
            hit = self.known[pos] == key
            if not bool(hit.any()):
                break
            items[hit] = torch.randint(self.num_items, (int(hit.sum()), ),
                                       generator=self.generator)
        return items

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor, Tensor]]:
        order = torch.randperm(self.pairs.size(1), generator=self.generator)
        for batch in order.split(self.batch_size):
            users, items = self.pairs[:, batch]
            yield users, items, self._negatives(users)


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor,
             ego: Optional[Tensor] = None, reg: float = 0.0) -> Tensor:
    r"""BPR with L2 regularization (Eq. 15), averaged over the batch:

    .. math::
        \mathcal{L}_{BPR} = \frac{1}{|\mathcal{B}|}
        \sum_{(u, i^+, i^-) \in \mathcal{B}} -\ln\sigma(\hat{y}_{ui^+} -
        \hat{y}_{ui^-}) + \lambda\,\frac{\lVert\Theta_{\mathcal{B}}
        \rVert^2}{2|\mathcal{B}|}

    with :math:`\Theta_{\mathcal{B}}` the layer-0 embeddings of the batch's
    users and items (:obj:`ego`), as in the LightGCN reference code.
    :obj:`neg_scores` may hold several negatives per triple :math:`(B, n)`:
    each pairs with the positive.
    """
    diff = pos_scores.view(-1, 1) - neg_scores.view(pos_scores.numel(), -1)
    loss = F.softplus(-diff).mean()
    if ego is not None and reg:
        loss = loss + reg * ego.pow(2).sum() / (2 * pos_scores.numel())
    return loss


def lambda_loss(scores: Tensor, relevance: Tensor,
                weighting: str = 'ndcg') -> Tensor:
    r"""LambdaLoss (Eq. 16, `Wang et al., 2018
    <https://doi.org/10.1145/3269206.3271784>`_) over lists of scored
    items, averaged over lists:

    .. math::
        \mathcal{L}_{Lambda} = \sum_{i, j} \eta_{ij}\,
        \log\big(1 + e^{-(s_i - s_j)}\big)

    where :math:`\eta_{ij} = 0` unless item :math:`i` is more relevant than
    item :math:`j`. With :obj:`weighting="ndcg"` it is then
    :math:`|\Delta\mathrm{NDCG}_{ij}|`, the change of the list's NDCG if
    :math:`i` and :math:`j` swapped places in the current ranking (the
    LambdaRank weight, which makes the loss target NDCG); with
    :obj:`"binary"` it is :math:`1`, Eq. 16 as printed. (The printed
    minus sign in front of the sum is dropped: with it, minimizing would
    rank the less relevant item first.)

    Args:
        scores (torch.Tensor): Scores :math:`(B, L)` of :math:`B` lists.
        relevance (torch.Tensor): Graded relevance :math:`(B, L)`.
        weighting (str, optional): :obj:`"ndcg"` or :obj:`"binary"`.
            (default: :obj:`"ndcg"`)
    """
    if weighting not in ('ndcg', 'binary'):
        raise ValueError(f"'weighting' must be 'ndcg' or 'binary' (got "
                         f"{weighting!r})")
    if scores.shape != relevance.shape or scores.dim() != 2:
        raise ValueError(f"'scores' and 'relevance' must have the same shape "
                         f"(B, L) (got {tuple(scores.shape)} and "
                         f"{tuple(relevance.shape)})")
    relevance = relevance.to(scores.dtype)
    eta = (relevance.unsqueeze(2) > relevance.unsqueeze(1)).to(scores.dtype)
    if weighting == 'ndcg':
        with torch.no_grad():
            gain = torch.exp2(relevance) - 1
            rank = scores.argsort(dim=1, descending=True).argsort(dim=1)
            discount = 1.0 / torch.log2(rank.to(scores.dtype) + 2)
            ideal = (gain.sort(dim=1, descending=True).values /
                     torch.log2(torch.arange(scores.size(1),
                                             device=scores.device,
                                             dtype=scores.dtype) + 2)
                     ).sum(dim=1).clamp(min=torch.finfo(scores.dtype).tiny)
            delta = ((gain.unsqueeze(2) - gain.unsqueeze(1)).abs() *
                     (discount.unsqueeze(2) - discount.unsqueeze(1)).abs() /
                     ideal.view(-1, 1, 1))
            eta = eta * delta
    margin = scores.unsqueeze(2) - scores.unsqueeze(1)
    return (eta * F.softplus(-margin)).sum(dim=(1, 2)).mean()


def triple_loss(model: nn.Module, adj: Tensor, users: Tensor, pos: Tensor,
                neg: Tensor, num_users: int, reg: float,
                loss: str = 'bpr') -> Tensor:
    r"""The loss of a batch of triples: BPR with L2 on the layer-0
    embeddings of the users, positives and first negatives (Eq. 15), plus
    with :obj:`loss="bpr+lambda"` the NDCG-weighted :func:`lambda_loss` of
    each list [positive, negatives] (Eq. 17)."""
    out = model.get_embedding(adj)
    user_emb = out[users].unsqueeze(1)
    pos_scores = (user_emb * out[num_users + pos].unsqueeze(1)).sum(-1)
    neg_scores = (user_emb * out[num_users + neg]).sum(-1)
    index = torch.cat([users, num_users + pos, num_users + neg[:, 0]])
    # Models with a quantized table regularize what they propagate.
    ego = model.ego_embedding(index) if hasattr(model, 'ego_embedding') \
        else model.embedding.weight[index]
    total = bpr_loss(pos_scores.view(-1), neg_scores, ego, reg)
    if loss == 'bpr+lambda':
        scores = torch.cat([pos_scores, neg_scores], dim=1)
        relevance = torch.zeros_like(scores)
        relevance[:, 0] = 1
        total = total + lambda_loss(scores, relevance)
    return total


@dataclass
class RecResult:
    r"""Validation metrics of the selected epoch, test metrics of the
    selected model, the selected epoch, epochs run, seconds spent in
    training steps (evaluation excluded) and the validation curve, one
    entry per evaluation: :obj:`{"epoch", "loss", "seconds", <metrics>}`."""
    val: Dict[str, float]
    test: Dict[str, float]
    epoch: int
    epochs_run: int
    train_seconds: float
    history: List[dict] = field(default_factory=list)


@torch.no_grad()
def node_embeddings(model: nn.Module, data: RecSysData,
                    adj: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    r"""The final user and item embeddings of :obj:`model` in evaluation
    mode."""
    device = model.embedding.weight.device
    adj = (data.adjacency() if adj is None else adj).to(device)
    model.eval()
    out = model.get_embedding(adj)
    return out[:data.num_users], out[data.num_users:]


def evaluate_recommender(model: nn.Module, data: RecSysData,
                         split: str = 'test', ks: Sequence[int] = (10, 20),
                         adj: Optional[Tensor] = None,
                         batch_size: int = 1024) -> Dict[str, float]:
    r"""Full-ranking metrics of :obj:`model` on :obj:`split`
    (:obj:`"val"` or :obj:`"test"`). Known interactions are masked: the
    training pairs for validation, training and validation pairs for
    test."""
    check_split(split)
    users, items = node_embeddings(model, data, adj)
    return split_metrics(users, items, data, split, ks, batch_size)


def check_split(split: str):
    if split not in ('val', 'test'):
        raise ValueError(f"'split' must be 'val' or 'test' (got {split!r})")


def split_metrics(users: Tensor, items: Tensor, data: RecSysData,
                  split: str, ks: Sequence[int] = (10, 20),
                  batch_size: int = 1024) -> Dict[str, float]:
    r"""Full-ranking metrics of final user and item embeddings on
    :obj:`split`, the known interactions masked: the training pairs for
    validation, training and validation pairs for test."""
    check_split(split)
    known = data.train if split == 'val' else \
        torch.cat([data.train, data.val], dim=1)
    return ranking_metrics(users, items, data.split(split).to(users.device),
                           known.to(users.device), ks, batch_size)


def train_recommender(model: nn.Module, data: RecSysData, epochs: int,
                      lr: float = 1e-3, batch_size: int = 2048,
                      reg: float = 1e-4, loss: str = 'bpr',
                      num_negatives: int = 1, eval_every: int = 1,
                      patience: Optional[int] = None,
                      select: str = 'recall@20',
                      ks: Sequence[int] = (10, 20), seed: int = 0,
                      adj: Optional[Tensor] = None,
                      progress: Optional[Callable[[dict], None]] = None,
                      max_seconds: Optional[float] = None) -> RecResult:
    r"""Trains :obj:`model` with Adam and mini-batches of
    :class:`TripleSampler` triples, evaluates on the validation pairs every
    :obj:`eval_every` epochs, restores the weights of the best evaluation of
    :obj:`select` (stopping after :obj:`patience` evaluations without
    improvement) and scores the test pairs once.

    Args:
        model (torch.nn.Module): A recommender (see the module docstring).
        data (RecSysData): The dataset.
        epochs (int): Most epochs to run.
        lr (float, optional): Adam's learning rate. (default: :obj:`1e-3`)
        batch_size (int, optional): Triples per step. (default: :obj:`2048`)
        reg (float, optional): :math:`\lambda` of Eq. 15.
            (default: :obj:`1e-4`)
        loss (str, optional): :obj:`"bpr"` (Eq. 15) or
            :obj:`"bpr+lambda"` (Eq. 17), LambdaLoss on each triple's list
            of the positive and its negatives. (default: :obj:`"bpr"`)
        num_negatives (int, optional): Negatives per triple.
            (default: :obj:`1`)
        eval_every (int, optional): Epochs between evaluations.
            (default: :obj:`1`)
        patience (int, optional): Evaluations without improvement before
            stopping; :obj:`None` runs all epochs. (default: :obj:`None`)
        select (str, optional): The validation metric that selects the
            model, e.g. :obj:`"ndcg@20"`. (default: :obj:`"recall@20"`)
        ks (sequence of int, optional): Cut-offs. (default: :obj:`(10, 20)`)
        seed (int, optional): Seeds sampling and initialization order.
            (default: :obj:`0`)
        adj (torch.Tensor, optional): :meth:`RecSysData.adjacency` of
            :obj:`data`, if already built. (default: :obj:`None`)
        progress (callable, optional): Called with each history entry.
            (default: :obj:`None`)
        max_seconds (float, optional): A budget of training-step seconds:
            the epoch that exhausts it is the last, and is evaluated.
            (default: :obj:`None`)
    """
    _check_training_args(epochs, lr, eval_every, patience, loss, select, ks)
    seed_everything(seed)
    device = model.embedding.weight.device
    adj = (data.adjacency() if adj is None else adj).to(device)
    sampler = TripleSampler(data, batch_size, num_negatives, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    exclude = UserItems(data.train.to(device), data.num_users)
    val_truth = UserItems(data.val.to(device), data.num_users)
    after_step = getattr(model, 'after_step', None)
    selection, best_val = Selection(), {}
    history, seconds, stale, epoch = [], 0.0, 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        start, total = time.perf_counter(), 0.0
        for users, pos, neg in sampler:
            users, pos, neg = users.to(device), pos.to(device), neg.to(device)
            optimizer.zero_grad()
            step_loss = triple_loss(model, adj, users, pos, neg,
                                    data.num_users, reg, loss)
            step_loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step(adj)
            total += float(step_loss.detach()) * users.numel()
        seconds += time.perf_counter() - start
        out_of_time = max_seconds is not None and seconds >= max_seconds
        if epoch % eval_every and epoch != epochs and not out_of_time:
            continue
        users_out, items_out = node_embeddings(model, data, adj)
        val = ranking_metrics(users_out, items_out, val_truth, exclude, ks)
        entry = dict(epoch=epoch, loss=total / data.train.size(1),
                     seconds=seconds, **val)
        history.append(entry)
        if progress is not None:
            progress(entry)
        if selection.offer(model, val[select], epoch):
            best_val = val
            stale = 0
        else:
            stale += 1
            if patience is not None and stale >= patience:
                break
        if out_of_time:
            break
    selection.restore(model)
    test = evaluate_recommender(model, data, 'test', ks, adj)
    return RecResult(best_val, test, selection.epoch, epoch, seconds,
                     history)


def _check_training_args(epochs, lr, eval_every, patience, loss, select, ks):
    for name, value in dict(epochs=epochs, eval_every=eval_every).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"'{name}' must be a positive int (got "
                             f"{value!r})")
    if patience is not None and (not isinstance(patience, int) or
                                 patience < 1):
        raise ValueError(f"'patience' must be a positive int or None (got "
                         f"{patience!r})")
    if not lr > 0:
        raise ValueError(f"'lr' must be positive (got {lr!r})")
    if loss not in LOSSES:
        raise ValueError(f"'loss' must be one of {LOSSES} (got {loss!r})")
    names = [f'{m}@{k}' for k in ks for m in ('recall', 'ndcg')]
    if select not in names:
        raise ValueError(f"'select' must be one of {names} (got {select!r})")


# Comparing float, uniform and GNAQ recommenders #############################

#: Method name -> table label. The first three GNAQ ablations are those of
#: Table 7; the last two are the literal readings of Eq. 14 and Eq. 11 that
#: our defaults depart from (see :class:`NodeAwareQuantizer`).
REC_METHODS = {
    'fp32': 'FP32 LightGCN',
    'lsq': 'LSQ per-node uniform',
    'gnaq': 'GNAQ',
    'gnaq-no-dqs': 'GNAQ w/o DQS',
    'gnaq-no-rau': 'GNAQ w/o RAU',
    'gnaq-no-rank': 'GNAQ w/o rank loss',
    'gnaq-eq14': 'GNAQ, RAU from neighbours only (Eq. 14)',
    'gnaq-levels': 'GNAQ, levels in the scores (Eq. 11)',
}

#: The :class:`NodeAwareQuantizer` settings of each GNAQ method.
_GNAQ_SETTINGS = {
    'gnaq': {},
    'gnaq-no-dqs': dict(dynamic_step=False),
    'gnaq-no-rau': dict(relation_aware=False),
    'gnaq-no-rank': {},
    'gnaq-eq14': dict(relation_weight=1.0),
    'gnaq-levels': dict(append_levels=True),
}


def quantize_recommender(model: LightGCN, method: str,
                         bits: int = 2) -> QuantLightGCN:
    r"""The quantized twin of a trained float :obj:`model` for
    :obj:`method` (a key of :data:`REC_METHODS` other than
    :obj:`"fp32"`): :obj:`"lsq"` quantizes each node's embedding on a
    uniform grid with a learned step (LSQ); the :obj:`"gnaq*"` methods use
    a :class:`~pyg_qgnn.quantizers.NodeAwareQuantizer` with the settings of
    their ablation."""
    if method not in REC_METHODS or method == 'fp32':
        raise ValueError(f"'method' must be one of "
                         f"{[m for m in REC_METHODS if m != 'fp32']} (got "
                         f"{method!r})")
    if method == 'lsq':
        quantizer = IntegerQuantizer(bits, granularity='node', grad='lsq')
    else:
        quantizer = NodeAwareQuantizer(bits, **_GNAQ_SETTINGS[method])
    return QuantLightGCN.from_float(model, quantizer)


def method_loss(method: str) -> str:
    r"""The training loss of :obj:`method`: BPR plus LambdaLoss (Eq. 17)
    for GNAQ and its ablations but the rank loss's, BPR alone otherwise."""
    return 'bpr+lambda' if method in _GNAQ_SETTINGS and \
        method != 'gnaq-no-rank' else 'bpr'


def embedding_bytes(model: nn.Module) -> int:
    r"""Bytes the embedding table of :obj:`model` takes when stored: float32
    for a float model; for GNAQ the packed codes and FP8 levels of its
    :class:`~pyg_qgnn.deploy.DeployedGNAQ`; for a per-node uniform
    quantizer the packed codes and one float32 step per node."""
    from pyg_qgnn.deploy.gnaq import DeployedGNAQ
    table = model.embedding.weight
    quantizer = getattr(model, 'embedding_quantizer', None)
    if quantizer is None or not quantizer.fake_quant_enabled:
        return table.numel() * 4
    if isinstance(quantizer, NodeAwareQuantizer):
        return DeployedGNAQ.from_trained(model).embedding_nbytes()
    if isinstance(quantizer, IntegerQuantizer):
        row_bytes = (table.size(1) * container_bits(quantizer.bits) + 7) // 8
        return table.size(0) * (row_bytes + 4)
    raise TypeError(f"no storage rule for a {type(quantizer).__name__}")


@dataclass
class RecRow:
    r"""One method of a comparison: test metrics of the
    validation-selected models (mean and std over seeds), validation
    Recall@20, stored embedding bytes, training seconds and selected
    epochs."""
    method: str
    bits: int
    dim: int
    test: Dict[str, float]
    test_std: Dict[str, float]
    val_recall20: float
    bytes: int
    train_seconds: float
    epochs: List[int]
    runs: int


def save_pretrained(model: LightGCN, path: str, data: RecSysData):
    r"""Writes the embedding table and layer weights of a trained float
    :obj:`model` to a safetensors file (no pickled code)."""
    from safetensors.torch import save as to_bytes
    payload = to_bytes(
        {'embedding.weight': model.embedding.weight.detach().cpu()
         .contiguous(), 'alpha': model.alpha.detach().cpu()},
        metadata=dict(format='pyg_qgnn.lightgcn',
                      num_users=str(data.num_users),
                      num_items=str(data.num_items)))
    with open(path, 'wb') as f:  # its mode follows the umask
        f.write(payload)


def load_pretrained(path: str, data: RecSysData,
                    embedding_dim: int) -> LightGCN:
    r"""The float LightGCN saved by :func:`save_pretrained`, checked
    against :obj:`data` (numbers of users and items) and
    :obj:`embedding_dim`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        raise ValueError(f'{path!r} is not a readable safetensors file: '
                         f'{e}') from None
    table = state.get('embedding.weight')
    if table is None or table.dim() != 2 or 'alpha' not in state:
        raise ValueError(f"{path!r} holds no LightGCN table "
                         f"('embedding.weight' and 'alpha')")
    if table.size(0) != data.num_nodes:
        raise ValueError(f'the pretrained table has {table.size(0):,} rows '
                         f'but {data.name} has {data.num_users:,} users + '
                         f'{data.num_items:,} items = {data.num_nodes:,}')
    if table.size(1) != embedding_dim:
        raise ValueError(f'the pretrained table has dimension '
                         f'{table.size(1)} but the embedding dimension asked '
                         f'for is {embedding_dim}')
    model = lightgcn(data.num_users, data.num_items, embedding_dim,
                     state['alpha'].numel() - 1)
    model.load_state_dict(state)
    return model


def compare_recommenders(data: RecSysData, methods: Sequence[str],
                         embedding_dim: int = 64, bits: int = 2,
                         num_layers: int = 3, epochs: int = 400,
                         finetune_epochs: int = 100, lr: float = 1e-3,
                         finetune_lr: float = 1e-3, batch_size: int = 2048,
                         reg: float = 1e-4, finetune_reg: float = 5e-4,
                         num_negatives: int = 8, eval_every: int = 5,
                         patience: Optional[int] = 10, seeds: int = 1,
                         pretrained: Optional[LightGCN] = None,
                         device: str = 'cpu',
                         progress: Optional[Callable[[str, dict],
                                                     None]] = None,
                         save_float: Optional[str] = None
                         ) -> Tuple[List[RecRow], List[dict]]:
    r"""Per seed, trains (or takes :obj:`pretrained`) a float LightGCN,
    then fine-tunes a quantized twin of it for each method of
    :obj:`methods`; every model is selected on validation Recall@20 and
    scored once on test. Returns one :class:`RecRow` per method and the
    validation curves (:obj:`{"method", "seed", "epoch", ...}`).

    Args:
        data (RecSysData): The dataset.
        methods (sequence of str): Keys of :data:`REC_METHODS`.
        embedding_dim (int, optional): :math:`d`. (default: :obj:`64`)
        bits (int, optional): Code width of the quantized methods.
            (default: :obj:`2`)
        num_layers (int, optional): LightGCN layers. (default: :obj:`3`)
        epochs (int, optional): Float training epochs (most).
            (default: :obj:`400`)
        finetune_epochs (int, optional): Fine-tuning epochs (most) of each
            quantized model. (default: :obj:`100`)
        lr (float, optional): Float learning rate. (default: :obj:`1e-3`)
        finetune_lr (float, optional): Fine-tuning learning rate.
            (default: :obj:`1e-3`)
        batch_size (int, optional): Triples per step. (default: :obj:`2048`)
        reg (float, optional): Float L2 weight :math:`\lambda`.
            (default: :obj:`1e-4`)
        finetune_reg (float, optional): Fine-tuning :math:`\lambda` (GNAQ's
            Table 2). (default: :obj:`5e-4`)
        num_negatives (int, optional): Negatives per triple of the
            LambdaLoss lists. (default: :obj:`8`)
        eval_every (int, optional): Epochs between validations.
            (default: :obj:`5`)
        patience (int, optional): Validations without improvement before
            stopping. (default: :obj:`10`)
        seeds (int, optional): Repetitions. (default: :obj:`1`)
        pretrained (LightGCN, optional): A trained float model to start
            from instead of training one (every seed then starts from it).
            (default: :obj:`None`)
        device (str, optional): Where to train. (default: :obj:`"cpu"`)
        progress (callable, optional): Called as :obj:`progress(method,
            entry)` after each validation. (default: :obj:`None`)
        save_float (str, optional): Write the float model trained for seed
            0 there (:func:`save_pretrained`). (default: :obj:`None`)
    """
    unknown = [m for m in methods if m not in REC_METHODS]
    if unknown:
        raise ValueError(f"'methods' must be among {list(REC_METHODS)} (got "
                         f"{unknown})")
    check_bits(bits)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"'seeds' must be a positive int (got {seeds!r})")
    methods = ['fp32'] + [m for m in methods if m != 'fp32']
    adj = data.adjacency().to(device)
    results = {m: [] for m in methods}
    curves = []
    for seed in range(seeds):
        for method in methods:
            report = None if progress is None else \
                functools.partial(progress, method)
            if method == 'fp32':
                if pretrained is not None:
                    model = copy.deepcopy(pretrained).to(device)
                    result = RecResult(
                        evaluate_recommender(model, data, 'val', adj=adj),
                        evaluate_recommender(model, data, 'test', adj=adj),
                        0, 0, 0.0)
                else:
                    seed_everything(seed)
                    model = lightgcn(data.num_users, data.num_items,
                                     embedding_dim, num_layers).to(device)
                    result = train_recommender(
                        model, data, epochs, lr, batch_size, reg,
                        eval_every=eval_every, patience=patience, seed=seed,
                        adj=adj, progress=report)
                    if save_float is not None and seed == 0:
                        save_pretrained(model, save_float, data)
                float_model, trained = model, model
            else:
                trained = quantize_recommender(float_model, method, bits)
                result = train_recommender(
                    trained, data, finetune_epochs, finetune_lr, batch_size,
                    finetune_reg, loss=method_loss(method),
                    num_negatives=num_negatives, eval_every=eval_every,
                    patience=patience, seed=seed, adj=adj, progress=report)
            results[method].append((result, embedding_bytes(trained)))
            curves += [dict(method=method, seed=seed, **entry)
                       for entry in result.history]
    rows = []
    for method in methods:
        runs = results[method]
        test = {k: summarize([r.test[k] for r, _ in runs])
                for k in runs[0][0].test}
        rows.append(RecRow(
            REC_METHODS[method], 32 if method == 'fp32' else bits,
            embedding_dim, {k: s.mean for k, s in test.items()},
            {k: s.std for k, s in test.items()},
            summarize([r.val['recall@20'] for r, _ in runs]).mean,
            runs[0][1], summarize([r.train_seconds for r, _ in runs]).mean,
            [r.epoch for r, _ in runs], len(runs)))
    return rows, curves


def format_rec_rows(rows: Sequence[RecRow]) -> str:
    r"""The rows as a markdown table, sizes relative to the first row."""
    base = rows[0].bytes

    def cell(row, key):
        text = f'{row.test[key]:.4f}'
        return text + (f' ± {row.test_std[key]:.4f}' if row.runs > 1 else '')

    return markdown_table(
        ['method', 'bits', 'd', 'Recall@10', 'Recall@20', 'NDCG@10',
         'NDCG@20', 'val Recall@20', 'embedding bytes', 'smaller by',
         'train s'],
        [[r.method, r.bits, r.dim, cell(r, 'recall@10'),
          cell(r, 'recall@20'), cell(r, 'ndcg@10'), cell(r, 'ndcg@20'),
          f'{r.val_recall20:.4f}', r.bytes, f'{base / r.bytes:.1f}x',
          f'{r.train_seconds:.0f}'] for r in rows])


def plot_rec_rows(rows: Sequence[RecRow], path: str, title: str = ''):
    r"""Test Recall@20 against stored embedding bytes, one point per
    method, as a PNG (needs matplotlib)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for row in rows:
        ax.errorbar(row.bytes, row.test['recall@20'],
                    yerr=row.test_std['recall@20'], fmt='o', capsize=3,
                    label=f'{row.method} ({row.bits}-bit)')
    ax.set_xscale('log')
    ax.set_xlabel('stored embedding bytes')
    ax.set_ylabel('test Recall@20')
    if title:
        ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
