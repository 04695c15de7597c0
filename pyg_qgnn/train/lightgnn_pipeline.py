r"""The three stages of LightGNN end to end, and their result rows:
teacher (float LightGCN) :math:`\rightarrow` intermediate model on the
augmented graph :math:`\rightarrow` pruned student, then the student's
deployed form measured (stored bytes, forward FLOPs)."""
import copy
import time
from torch.utils import benchmark
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn
from torch_geometric.nn.models import LightGCN

from pyg_qgnn.datasets.recsys import RecSysData
from pyg_qgnn.deploy.convert import nbytes
from pyg_qgnn.deploy.lightgnn import DeployedLightGNN, item_dtype
from pyg_qgnn.distill.lightgnn import importance_scores
from pyg_qgnn.nn.models.lightgnn import (
    Adjacency,
    LightGNN,
    lightgcn_forward_flops,
    propagate,
)
from pyg_qgnn.prune.lightgnn import (
    fold_layer_weights,
    joint_schedule,
    prune_entries,
    prune_pairs,
    teacher_edge_terms,
)
from pyg_qgnn.train.lightgnn import (
    ABLATIONS,
    LightGNNConfig,
    StageResult,
    evaluate_lightgnn,
    lightgnn_embeddings,
    train_lightgnn,
    tune_layer_weights,
)
from pyg_qgnn.train.results import seed_everything
from pyg_qgnn.transforms import HighOrderAugment

Progress = Optional[Callable[[str, dict], None]]


def augmented_pairs(data: RecSysData, hops: int = 3,
                    max_per_node: Optional[int] = 32) -> Tensor:
    r"""The :obj:`(user, item)` pairs of the augmented graph of Eq. 7: the
    training pairs first, then those :class:`~pyg_qgnn.transforms.
    HighOrderAugment` adds (linked by a path of at most :obj:`hops` hops,
    at most :obj:`max_per_node` new ones per user)."""
    graph = HighOrderAugment(hops=hops, max_per_node=max_per_node)(
        data.graph())
    src, dst = graph.edge_index
    forward = src < data.num_users
    return torch.stack([src[forward], dst[forward] - data.num_users])


def lightgcn_nbytes(num_users: int, num_items: int, embedding_dim: int,
                    num_pairs: int) -> int:
    r"""Bytes a float LightGCN takes stored the way
    :class:`~pyg_qgnn.deploy.DeployedLightGNN` stores a student: its
    :obj:`float32` table and its graph as a user-sorted CSR (item ids in
    the same dtype; no per-edge values, as LightGCN derives them from the
    degrees)."""
    item_bytes = torch.empty(0, dtype=item_dtype(num_items)).element_size()
    return ((num_users + num_items) * embedding_dim * 4 + num_users * 4 +
            num_pairs * item_bytes)


@dataclass
class LightGNNRow:
    r"""One model of a LightGNN comparison: test metrics of the
    validation-selected model, validation Recall@20, kept edges and
    embedding entries (shares of the observed graph and of the full
    table), layers, stored bytes, forward FLOPs, training seconds and the
    model it distilled from (:obj:`"teacher"`, :obj:`"intermediate"`, or
    empty for the teacher itself)."""
    method: str
    label: str
    test: Dict[str, float]
    val_recall20: float
    edge_share: float
    entry_share: float
    layers: int
    bytes: int
    flops: int
    train_seconds: float
    forward_seconds: float = float('nan')
    history: List[dict] = field(default_factory=list)
    distilled_from: str = ''


def teacher_row(teacher: LightGCN, data: RecSysData, seconds: float,
                val_recall20: float) -> LightGNNRow:
    dim, layers = teacher.embedding_dim, teacher.num_layers
    return LightGNNRow(
        'teacher', f'LightGCN teacher ({layers} layers)',
        evaluate_lightgnn(teacher, data), val_recall20, 1.0, 1.0, layers,
        lightgcn_nbytes(data.num_users, data.num_items, dim,
                        data.train.size(1)),
        lightgcn_forward_flops(data.num_nodes, 2 * data.train.size(1), dim,
                               layers), seconds)


def model_row(method: str, label: str, model: LightGNN, data: RecSysData,
              stage: StageResult, seconds: float) -> LightGNNRow:
    deployed = DeployedLightGNN.from_trained(model.eval())
    kept = int(model.edge_mask.sum())
    return LightGNNRow(
        method, label, evaluate_lightgnn(model, data),
        stage.val.get('recall@20', float('nan')),
        kept / data.train.size(1),
        int(model.entry_mask.sum()) / model.entry_mask.numel(),
        model.num_layers, nbytes(deployed), deployed.forward_flops(),
        seconds, history=stage.history)


def build_lightgnn(data: RecSysData, pairs: Tensor, source: nn.Module,
                   num_layers: int, learn_edge_weight: bool = True,
                   residual: bool = False,
                   edge_value_dtype=torch.float32) -> LightGNN:
    r"""A :class:`LightGNN` over :obj:`pairs` whose embeddings start from
    those of :obj:`source` (a trained LightGCN or LightGNN) and whose layer
    weights are :obj:`source`'s folded to :obj:`num_layers` layers
    (:func:`~pyg_qgnn.prune.lightgnn.fold_layer_weights`), on its
    device; :obj:`edge_value_dtype` as in :class:`LightGNN`."""
    table = source.embedding.weight.detach()
    model = LightGNN(data.num_users, data.num_items, pairs.cpu(),
                     table.size(1), num_layers, residual=residual,
                     learn_edge_weight=learn_edge_weight,
                     alpha=fold_layer_weights(source.alpha.cpu(), num_layers),
                     edge_value_dtype=edge_value_dtype).to(table.device)
    model.load_embedding(table)
    return model


def train_intermediate(teacher: nn.Module, data: RecSysData,
                       config: LightGNNConfig, progress: Progress = None
                       ) -> (LightGNN, StageResult):
    r"""The intermediate KD layer (Sec. 3.2.2): a :class:`LightGNN` on the
    augmented graph, started from the teacher's embeddings, learning
    :math:`\mathbf{W}^t` under the teacher's bilevel distillation."""
    pairs = augmented_pairs(data, config.hops, config.max_per_node)
    model = build_lightgnn(data, pairs, teacher, config.intermediate_layers,
                           residual=config.residual)
    teacher_emb = torch.cat(lightgnn_embeddings(teacher, data))
    stage = train_lightgnn(model, data, config.intermediate_epochs, config,
                           teacher_emb, uniformity=False,
                           progress=_tagged(progress, 'intermediate'))
    return model, stage


def prune_student(student: LightGNN, data: RecSysData, teacher: nn.Module,
                  config: LightGNNConfig, progress: Progress = None
                  ) -> List[StageResult]:
    r"""The iterative pruning of Sec. 3.1: per run of
    :func:`~pyg_qgnn.prune.lightgnn.joint_schedule`, train (selected on
    validation), then prune the edges by their decision weight (Eq. 8, or
    at random) and the entries by magnitude (or at random), each within
    :obj:`config.edge_scope` / :obj:`config.entry_scope`; after the last
    run the layer weights are chosen on validation
    (:obj:`config.tune_alpha`), and a last run fine-tunes the pruned
    model. The uniformity constraint (Eq. 9) joins once entries have been
    pruned (its positive sets come from the masks)."""
    c = config
    gen = torch.Generator().manual_seed(c.seed + 2)
    teacher_emb = torch.cat(lightgnn_embeddings(teacher, data))
    weight_t, score_t = teacher_edge_terms(student, teacher, teacher_emb)
    if not c.importance:
        weight_t = score_t = None
    stages = []
    for run, (edge_share, entry_share) in enumerate(joint_schedule(
            c.edge_keep, c.edge_step, c.entry_keep, c.entry_step)):
        stages.append(train_lightgnn(
            student, data, c.run_epochs, c, teacher_emb, uniformity=run > 0,
            progress=_tagged(progress, f'run {run + 1}')))
        decision = None if c.edge_score == 'random' else importance_scores(
            student.edge_weight, weight_t, score_t, c.beta1, c.beta2,
            c.standardize_importance)
        prune_pairs(student, edge_share, decision, gen, c.edge_scope)
        prune_entries(student, entry_share, c.entry_score, gen,
                      c.entry_scope)
    if c.tune_alpha:
        tune_layer_weights(student, data)
    stages.append(train_lightgnn(student, data, c.final_epochs, c,
                                 teacher_emb, uniformity=True,
                                 progress=_tagged(progress, 'final')))
    return stages


def _tagged(progress: Progress, stage: str):
    if progress is None:
        return None
    return lambda entry: progress(stage, entry)


@dataclass
class LightGNNRun:
    r"""What :func:`run_lightgnn` trained: the models and their rows."""
    teacher: nn.Module
    intermediate: Optional[LightGNN]
    students: Dict[str, LightGNN]
    rows: List[LightGNNRow]


def run_lightgnn(data: RecSysData, teacher: nn.Module,
                 config: LightGNNConfig = LightGNNConfig(),
                 methods: Sequence[str] = ('lightgnn', ),
                 teacher_seconds: float = 0.0,
                 progress: Progress = None) -> LightGNNRun:
    r"""Distils and prunes a student for each of :obj:`methods` (keys of
    :data:`~pyg_qgnn.train.lightgnn.ABLATIONS`) from a trained float
    :obj:`teacher` (e.g. :func:`~pyg_qgnn.train.recsys.lightgcn` trained by
    :func:`~pyg_qgnn.train.recsys.train_recommender`), sharing one
    intermediate model among them; returns the models and a row each for
    the teacher, the intermediate model and every student (see
    :obj:`LightGNNConfig.select_source` for whom each student distils
    from)."""
    unknown = [m for m in methods if m not in ABLATIONS]
    if unknown or not methods:
        raise ValueError(f"'methods' must name some of {list(ABLATIONS)} "
                         f"(got {list(methods)!r})")
    seed_everything(config.seed)
    val = evaluate_lightgnn(teacher, data, 'val')['recall@20']
    rows = [teacher_row(teacher, data, teacher_seconds, val)]
    intermediate, intermediate_val = None, -float('inf')
    if any(replace(config, **ABLATIONS[m][1]).intermediate for m in methods):
        start = time.perf_counter()
        intermediate, stage = train_intermediate(teacher, data, config,
                                                 progress)
        rows.append(model_row('intermediate', 'intermediate (augmented '
                              'graph, no pruning)', intermediate, data, stage,
                              time.perf_counter() - start))
        rows[-1].distilled_from = 'teacher'
        intermediate_val = stage.val['recall@20']
    students = {}
    for method in methods:
        label, changes = ABLATIONS[method]
        c = replace(config, **changes)
        source_name = 'intermediate' if c.intermediate and (
            not c.select_source or intermediate_val >= val) \
            else 'teacher'
        source = intermediate if source_name == 'intermediate' else teacher
        start = time.perf_counter()
        student = build_lightgnn(data, data.train, source,
                                 c.student_layers, c.learn_edge_weight,
                                 c.residual, c.edge_value_dtype)
        stages = prune_student(student, data, source, c,
                               _tagged_method(progress, method))
        students[method] = student
        rows.append(model_row(method, label, student, data, stages[-1],
                              time.perf_counter() - start))
        rows[-1].history = [h for s in stages for h in s.history]
        rows[-1].distilled_from = source_name
    return LightGNNRun(teacher, intermediate, students, rows)


def _tagged_method(progress: Progress, method: str) -> Progress:
    if progress is None:
        return None
    return lambda stage, entry: progress(f'{method} {stage}', entry)


def forward_call(model: nn.Module, data: RecSysData) -> Callable[[], Tensor]:
    r"""A call computing the final embeddings of :obj:`model` (a float
    LightGCN teacher, a :class:`LightGNN` or a
    :class:`~pyg_qgnn.deploy.DeployedLightGNN`) from operands prepared
    once: the normalized graph and the layer-0 table, as a server holds
    them after loading."""
    if isinstance(model, LightGNN):
        model = DeployedLightGNN.from_trained(model.eval())
    if isinstance(model, DeployedLightGNN):
        adj = Adjacency(model.kept_pairs(), model.num_users, model.num_items)
        values = adj.directed(model.propagation_values())
        x = model.layer0()
        return lambda: propagate(adj, values, x, model.num_layers,
                                 model.alpha, model.residual)
    model = copy.deepcopy(model).cpu().eval()  # timed on the CPU, as the
    adj = data.adjacency()                     # deployed student is

    def call():
        with torch.no_grad():
            return model.get_embedding(adj)
    return call


def median_seconds(call: Callable[[], object],
                   min_run_time: float = 1.0) -> float:
    r"""The median time of :obj:`call` by :mod:`torch.utils.benchmark`,
    with torch's current number of threads."""
    timer = benchmark.Timer(stmt='call()', globals=dict(call=call),
                            num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def time_forwards(run: 'LightGNNRun', data: RecSysData,
                  min_run_time: float = 1.0):
    r"""Fills :obj:`forward_seconds` of every row of :obj:`run`."""
    models = dict(teacher=run.teacher, intermediate=run.intermediate,
                  **run.students)
    for row in run.rows:
        model = models.get(row.method)
        if model is not None:
            row.forward_seconds = median_seconds(forward_call(model, data),
                                                 min_run_time)


def format_lightgnn_rows(rows: Sequence[LightGNNRow]) -> str:
    r"""The rows as a markdown table, sizes and FLOPs also relative to the
    teacher (the first row)."""
    from pyg_qgnn.train.results import markdown_table
    base = rows[0]
    header = ['method', 'from', 'R@20', 'R@40', 'N@20', 'N@40', 'val R@20',
              'edges', 'entries', 'layers', 'bytes', 'size vs teacher',
              'FLOPs vs teacher', 'forward ms', 'speed-up', 'train s']
    body = []
    for row in rows:
        t = row.test
        speed = base.forward_seconds / row.forward_seconds
        body.append([
            row.label, row.distilled_from, f"{t['recall@20']:.4f}",
            f"{t['recall@40']:.4f}",
            f"{t['ndcg@20']:.4f}", f"{t['ndcg@40']:.4f}",
            f'{row.val_recall20:.4f}', f'{row.edge_share:.0%}',
            f'{row.entry_share:.0%}', str(row.layers), f'{row.bytes:,}',
            _relative_size(row.bytes, base.bytes),
            f'{row.flops / base.flops:.2f}x',
            f'{row.forward_seconds * 1e3:.1f}', f'{speed:.2f}x',
            f'{row.train_seconds:.0f}'])
    return markdown_table(header, body)


def _relative_size(size: int, base: int) -> str:
    change = size / base - 1
    return '0%' if round(change * 100) == 0 else f'{change:+.0%}'


def plot_lightgnn_rows(rows: Sequence[LightGNNRow], path: str,
                       title: str = ''):
    r"""Test Recall@20 against stored bytes and against forward FLOPs, one
    point per model, as a PNG (needs matplotlib)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for row in rows:
        for ax, x in zip(axes, (row.bytes, row.flops)):
            ax.plot(x, row.test['recall@20'], 'o', label=row.label)
    axes[0].set_xlabel('stored bytes')
    axes[1].set_xlabel('forward FLOPs')
    axes[0].set_ylabel('test Recall@20')
    for ax in axes:
        ax.set_xscale('log')
    axes[1].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
