r"""The compression study of `Khedri et al. (2025)
<https://arxiv.org/abs/2510.22058>`_ on any of its tasks: the pruning grid
(sparsity :math:`\times` {global, fine-grained} :math:`\times` {without,
with fine-tuning}), the :math:`L_2` regularisation sweep, the lottery-ticket
test and the quantization comparison, each run several times (seeds, or
folds of 10-fold cross-validation) and measured as the paper measures:
test score, checkpoint size, inference time, peak memory, CPU and energy
(:mod:`pyg_qgnn.profile`).

A :class:`Task` knows how to build, train, score and run the models of one
(task, dataset) pair; the sweeps return one record per run and setting, and
:func:`aggregate` turns them into mean ± std rows. Every model is selected on
validation data and scored on test data.
"""
import copy
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.loader import DataLoader
from torch_geometric.nn import global_mean_pool
from torch_geometric.nn.models import GAE, GCN, MLP
from torch_geometric.transforms import NormalizeFeatures, RandomLinkSplit
from torch_geometric.utils import degree

from pyg_qgnn.prune.l2 import L2Penalty
from pyg_qgnn.prune.lottery import iterative_magnitude_pruning, snapshot
from pyg_qgnn.prune.magnitude import magnitude_prune, threshold_prune
from pyg_qgnn.prune.masks import layer_sparsity, make_permanent, sparsity
from pyg_qgnn.prune.sparse_checkpoint import checkpoint_bytes
from pyg_qgnn.profile import ResourceUsage, measure
from pyg_qgnn.quantize import quantize_model
from pyg_qgnn.train import (
    Method,
    evaluate_nodes,
    file_size,
    seed_everything,
    stratified_folds,
    summarize,
    train_graph_classifier,
    train_node_classifier,
)
from pyg_qgnn.train.graph import accuracy
from pyg_qgnn.train.node import Penalty, make_optimizer

#: The study's task names and the datasets each runs on.
TASKS = {'node': ('Cora', ), 'link': ('Cora', ), 'graph': ('PROTEINS', 'BBBP')}
#: The regularisation rates of the paper's Table 17.
L2_RATES = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6,
            0.7, 0.8, 0.9, 1.0, 1e2, 1e3, 1e6)


def has_spline_conv() -> bool:
    r"""Whether :class:`~torch_geometric.nn.conv.SplineConv` can run (it
    needs the optional :obj:`torch-spline-conv` extension)."""
    import importlib.util
    return importlib.util.find_spec('torch_spline_conv') is not None


class SplineNet(nn.Module):
    r"""Two :class:`~torch_geometric.nn.conv.SplineConv` layers for Cora, as
    in PyG's :obj:`examples/cora.py` (the paper's best node classifier):
    :math:`\mathbf{x}' = \mathrm{Spline}_2(\mathrm{ELU}(\mathrm{Spline}_1(
    \mathbf{x})))` with one-dimensional pseudo-coordinates
    :math:`u_{ji} = \deg(i) / \max_k \deg(k)` (PyG's
    :class:`~torch_geometric.transforms.TargetIndegree`), computed from
    :obj:`edge_index` so the model is called like any other.

    Args:
        in_channels (int): Node feature size.
        num_classes (int): Number of classes.
        hidden_channels (int, optional): Hidden size. (default: :obj:`16`)
        dropout (float, optional): Dropout before each layer.
            (default: :obj:`0.5`)
    """
    def __init__(self, in_channels: int, num_classes: int,
                 hidden_channels: int = 16, dropout: float = 0.5):
        super().__init__()
        from torch_geometric.nn import SplineConv
        self.dropout = dropout
        self.conv1 = SplineConv(in_channels, hidden_channels, dim=1,
                                kernel_size=2)
        self.conv2 = SplineConv(hidden_channels, num_classes, dim=1,
                                kernel_size=2)

    def reset_parameters(self):
        self.conv1.reset_parameters()
        self.conv2.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        in_degree = degree(edge_index[1], x.size(0))
        pseudo = (in_degree / in_degree.max().clamp(min=1))[edge_index[1]]
        pseudo = pseudo.view(-1, 1)
        x = F.dropout(x, self.dropout, self.training)
        x = F.elu(self.conv1(x, edge_index, pseudo))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index, pseudo)


class GCNGraphClassifier(nn.Module):
    r"""A 3-layer GCN graph classifier (the paper's GNNNet baseline, with
    PyG layers): GCN layers, mean pooling and a 2-layer MLP head.

    .. math::
        \mathbf{y}_G = \mathrm{MLP}\Big(\frac{1}{|G|}\sum_{i \in G}
        \mathrm{GCN}(\mathbf{X}, \mathbf{A})_i\Big)

    Args:
        in_channels (int): Node feature size.
        num_classes (int): Number of graph classes.
        hidden_channels (int, optional): Hidden size. (default: :obj:`64`)
        num_layers (int, optional): GCN layers. (default: :obj:`3`)
        dropout (float, optional): Dropout in the head. (default: :obj:`0.5`)
    """
    def __init__(self, in_channels: int, num_classes: int,
                 hidden_channels: int = 64, num_layers: int = 3,
                 dropout: float = 0.5):
        super().__init__()
        self.gnn = GCN(in_channels, hidden_channels, num_layers)
        self.head = MLP([hidden_channels, hidden_channels, num_classes],
                        norm=None, dropout=dropout)

    def reset_parameters(self):
        self.gnn.reset_parameters()
        self.head.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        return self.head(global_mean_pool(self.gnn(x, edge_index), batch))


# Tasks #######################################################################

class Task:
    r"""One (task, dataset) pair of the study. Subclasses define
    :meth:`make_model`, :meth:`train`, :meth:`evaluate` and
    :meth:`inference`; a *run* is a seed (Cora) or a fold (graph tasks)."""
    task = ''
    metric = 'accuracy'
    models: tuple = ()

    def __init__(self, dataset: str, source: str):
        self.dataset, self.source = dataset, source

    def runs(self, count: int) -> List[int]:
        return list(range(count))

    def make_model(self, name: str) -> nn.Module:
        raise TypeError(f"'{type(self).__name__}' must define make_model()")

    def train(self, model: nn.Module, run: int, epochs: int, lr: float,
              penalty: Optional[Penalty] = None,
              quant_lr: Optional[float] = None) -> float:
        r"""Trains in place; returns the test score of the epoch with the
        best validation score (the model keeps those weights)."""
        raise TypeError(f"'{type(self).__name__}' must define train()")

    def evaluate(self, model: nn.Module, run: int) -> float:
        raise TypeError(f"'{type(self).__name__}' must define evaluate()")

    def inference(self, model: nn.Module, run: int) -> Callable[[], object]:
        r"""One inference pass over the run's test data."""
        raise TypeError(f"'{type(self).__name__}' must define inference()")

    def check_model(self, name: str):
        if name not in self.models:
            raise ValueError(f"'model' must be one of {list(self.models)} for "
                             f"the {self.task} task (got {name!r})")


class NodeTask(Task):
    r"""Node classification on a Planetoid graph (public split): a 2-layer
    GCN (Kipf & Welling) and, with :obj:`torch-spline-conv`, :class:`SplineNet`."""
    task = 'node'

    def __init__(self, graph):
        super().__init__(graph.name, graph.kind)
        self.data = NormalizeFeatures()(graph.data)
        self.num_classes = graph.num_classes
        self.models = ('gcn', 'spline') if has_spline_conv() else ('gcn', )

    def make_model(self, name: str) -> nn.Module:
        self.check_model(name)
        if name == 'spline':
            return SplineNet(self.data.num_features, self.num_classes)
        return GCN(self.data.num_features, 16, 2, self.num_classes,
                   dropout=0.5, cached=True)

    def train(self, model, run, epochs, lr, penalty=None, quant_lr=None):
        return train_node_classifier(model, self.data, epochs, lr=lr,
                                     penalty=penalty,
                                     quant_lr=quant_lr).test_acc

    def evaluate(self, model, run):
        return evaluate_nodes(model, self.data, ('test_mask', ))[0]

    def inference(self, model, run):
        x, edge_index = self.data.x, self.data.edge_index
        return lambda: model(x, edge_index)


class LinkTask(Task):
    r"""Link prediction on a Planetoid graph with PyG's
    :class:`~torch_geometric.nn.models.GAE` and a 2-layer GCN encoder
    (32, 16 channels), trained on the reconstruction loss with negative
    sampling; edges split 85/5/10 once (seed :obj:`12345`). Scored by test
    ROC-AUC."""
    task = 'link'
    metric = 'AUC'
    models = ('gae',)

    def __init__(self, graph, split_seed: int = 12345):
        super().__init__(graph.name, graph.kind)
        data = NormalizeFeatures()(graph.data)
        data = data.__class__(x=data.x, edge_index=data.edge_index)
        generator_state = torch.get_rng_state()
        torch.manual_seed(split_seed)
        self.split = RandomLinkSplit(num_val=0.05, num_test=0.1,
                                     is_undirected=True, split_labels=True,
                                     add_negative_train_samples=False)(data)
        torch.set_rng_state(generator_state)

    def make_model(self, name: str) -> nn.Module:
        self.check_model(name)
        return GAE(GCN(self.split[0].num_features, 32, 2, 16))

    @torch.no_grad()
    def _score(self, model: nn.Module, data) -> float:
        model.eval()
        z = model.encode(data.x, data.edge_index)
        auc, _ = model.test(z, data.pos_edge_label_index,
                            data.neg_edge_label_index)
        return float(auc)

    def train(self, model, run, epochs, lr, penalty=None, quant_lr=None):
        if epochs < 1:
            raise ValueError(f"'epochs' must be a positive integer "
                             f"(got {epochs})")
        train, val, test = self.split
        optimizer = make_optimizer(model, lr, 0.0, quant_lr)
        best, best_state = -1.0, None
        for _ in range(epochs):
            model.train()
            optimizer.zero_grad()
            z = model.encode(train.x, train.edge_index)
            loss = model.recon_loss(z, train.pos_edge_label_index)
            if penalty is not None:
                loss = loss + penalty(model)
            loss.backward()
            optimizer.step()
            score = self._score(model, val)
            if score > best:
                best, best_state = score, copy.deepcopy(model.state_dict())
        model.load_state_dict(best_state)
        return self._score(model, test)

    def evaluate(self, model, run):
        return self._score(model, self.split[2])

    def inference(self, model, run):
        test = self.split[2]
        edges = torch.cat([test.pos_edge_label_index,
                           test.neg_edge_label_index], dim=1)
        return lambda: model.decode(model.encode(test.x, test.edge_index),
                                    edges)


class GraphTask(Task):
    r"""Graph classification (TU datasets, BBBP) with stratified 10-fold
    cross-validation (PyG's kernel benchmark split): GIN (5 layers, 64
    channels, as in Degree-Quant) and :class:`GCNGraphClassifier`. A run is
    a fold."""
    task = 'graph'
    models = ('gin', 'gcn3')

    def __init__(self, loaded, name: str, folds: int = 10,
                 batch_size: int = 128):
        super().__init__(name, loaded.kind)
        self.data = loaded.dataset
        labels = self.data.y.view(-1)
        self.folds = stratified_folds(labels, folds)
        self.batch_size = batch_size
        self._batches: Dict[int, list] = {}

    def runs(self, count: int) -> List[int]:
        if count > len(self.folds):
            raise ValueError(f"'runs' must be at most {len(self.folds)}, the "
                             f"number of folds (got {count})")
        return list(range(count))

    def make_model(self, name: str) -> nn.Module:
        from pyg_qgnn.nn.models import GraphClassifier
        self.check_model(name)
        cls = GraphClassifier if name == 'gin' else GCNGraphClassifier
        return cls(self.data.num_features, self.data.num_classes)

    def train(self, model, run, epochs, lr, penalty=None, quant_lr=None):
        _, test, _, _ = train_graph_classifier(
            model, self.data, self.folds[run], epochs, self.batch_size, lr=lr,
            penalty=penalty, quant_lr=quant_lr)
        return test

    def evaluate(self, model, run):
        return accuracy(model, DataLoader(self.data[self.folds[run][2]],
                                          self.batch_size))

    def inference(self, model, run):
        if run not in self._batches:
            self._batches[run] = list(DataLoader(
                self.data[self.folds[run][2]], self.batch_size))
        batches = self._batches[run]

        def call():
            for batch in batches:
                model(batch.x, batch.edge_index, batch.batch)
        return call


def load_task(task: str, dataset: str, root: Optional[str] = None,
              log: Callable[[str], None] = print) -> Task:
    r"""The :class:`Task` of :obj:`task` on :obj:`dataset`, from
    :obj:`root` (or :obj:`$PYG_QGNN_DATA`, :obj:`../shared/data`, PyG's
    download, else an announced synthetic stand-in)."""
    from pyg_qgnn.datasets.planetoid import PLANETOID_NAMES
    if task not in TASKS:
        raise ValueError(f"'task' must be one of {list(TASKS)} (got {task!r})")
    allowed = TASKS[task] if task == 'graph' else tuple(
        PLANETOID_NAMES.values())
    if dataset not in allowed:
        raise ValueError(f"'dataset' must be one of {list(allowed)} for "
                         f"the {task} task (got {dataset!r})")
    if task in ('node', 'link'):
        from pyg_qgnn.datasets import load_planetoid
        graph = load_planetoid(dataset, root, log=log)
        return NodeTask(graph) if task == 'node' else LinkTask(graph)
    if dataset == 'BBBP':
        from pyg_qgnn.datasets import load_molecules
        return GraphTask(load_molecules('BBBP', root, log=log), 'BBBP')
    from pyg_qgnn.datasets import load_tudataset
    return GraphTask(load_tudataset(dataset, root, log=log), dataset)


# Sweeps ######################################################################

def _ident(task: Task, model: str, part: str, run: int) -> dict:
    return dict(part=part, task=task.task, dataset=task.dataset,
                source=task.source, model=model, metric=task.metric, run=run)


def _usage(prefix: str, usage: ResourceUsage) -> dict:
    r"""The fields of :obj:`usage`, named :obj:`<prefix><field>`; the
    energy source (the same for all) once, without prefix."""
    fields = {f'{prefix}time_s': usage.time_s,
              f'{prefix}peak_rss_mb': usage.peak_rss_bytes / 2**20,
              f'{prefix}rss_increase_mb': usage.rss_increase_bytes / 2**20,
              f'{prefix}cpu_percent': usage.cpu_percent,
              f'{prefix}energy_j': usage.energy_j}
    if not prefix:
        fields['energy_source'] = usage.energy_source
    return fields


def _inference_usage(task: Task, model: nn.Module, run: int,
                     repeats: int) -> dict:
    r"""Inference costs of :obj:`model` with its masks folded in (as it
    would be deployed): a mask would add a multiplication per call."""
    deployed = make_permanent(copy.deepcopy(model)).eval()
    call = task.inference(deployed, run)

    def step():
        with torch.inference_mode():
            call()
    return _usage('', measure(step, repeats))


def _timed_training(fn: Callable[[], float]) -> tuple:
    r"""Runs a training once; its score and what it cost."""
    result = []
    usage = measure(lambda: result.append(fn()), repeats=1, warmup=0)
    return result[0], _usage('train_', usage)


def pruning_sweep(task: Task, model_name: str, runs: int,
                  sparsities: Sequence[float], epochs: int,
                  finetune_epochs: int, lr: float = 0.01,
                  finetune_lr: float = 0.005,
                  scopes: Sequence[str] = ('global', 'layer'),
                  repeats: int = 10,
                  progress: Optional[Callable[[], None]] = None) -> List[dict]:
    r"""Per run: trains the dense model, then for each scope and sparsity
    prunes a copy by magnitude, scores it without and with fine-tuning
    (masks fixed) and measures its checkpoint (:func:`save_sparse`, fp32 and
    int8 values, against the dense :func:`pyg_qgnn.deploy.save` file) and
    inference. :obj:`progress()` follows each pruned model."""
    records = []
    for run in task.runs(runs):
        seed_everything(run)
        dense = task.make_model(model_name)
        task.train(dense, run, epochs, lr)
        dense_bytes = file_size(dense)
        for scope in scopes:
            for target in sparsities:
                model = magnitude_prune(copy.deepcopy(dense), target, scope)
                for finetuned in (False, True):
                    if finetuned:
                        score = task.train(model, run, finetune_epochs,
                                           finetune_lr)
                    else:
                        score = task.evaluate(model, run)
                    records.append(dict(
                        _ident(task, model_name, 'prune', run), scope=scope,
                        finetuned=finetuned, sparsity=float(target),
                        achieved=sparsity(model), score=score,
                        dense_bytes=dense_bytes,
                        bytes=checkpoint_bytes(model),
                        bytes_int8=checkpoint_bytes(model, 'int8'),
                        layers=layer_sparsity(model),
                        **_inference_usage(task, model, run, repeats)))
                if progress is not None:
                    progress()
    return records


def l2_sweep(task: Task, model_name: str, runs: int, rates: Sequence[float],
             threshold: float, epochs: int, lr: float = 0.01,
             repeats: int = 10,
             progress: Optional[Callable[[], None]] = None) -> List[dict]:
    r"""Per run and rate: trains a fresh model with the :math:`L_2` penalty
    (measuring the training's cost, as the paper's Table 17), scores it,
    then prunes every weight with :math:`|w| \le` :obj:`threshold` and
    scores it again."""
    records = []
    for run in task.runs(runs):
        for rate in rates:
            seed_everything(run)
            model = task.make_model(model_name)
            score, cost = _timed_training(lambda: task.train(
                model, run, epochs, lr, penalty=L2Penalty(rate)))
            threshold_prune(model, threshold)
            records.append(dict(
                _ident(task, model_name, 'l2', run), rate=float(rate),
                threshold=float(threshold), score=score,
                pruned_score=task.evaluate(model, run),
                achieved=sparsity(model), bytes=checkpoint_bytes(model),
                dense_bytes=file_size(make_permanent(copy.deepcopy(model))),
                **cost, **_inference_usage(task, model, run, repeats)))
            if progress is not None:
                progress()
    return records


def lottery_test(task: Task, model_name: str, runs: int,
                 sparsities: Sequence[float], epochs: int, lr: float = 0.01,
                 progress: Optional[Callable[[], None]] = None) -> List[dict]:
    r"""Per run: :func:`~pyg_qgnn.prune.iterative_magnitude_pruning` from
    the initial weights through :obj:`sparsities` (global scope), each
    ticket against the same masks on fresh random weights."""
    records = []
    for run in task.runs(runs):
        seed_everything(run)
        model = task.make_model(model_name)
        rounds = iterative_magnitude_pruning(
            model, lambda m: task.train(m, run, epochs, lr),
            [s for s in sparsities if s > 0], rewind_to=snapshot(model),
            reinit=lambda: task.make_model(model_name))
        for target, result in zip([0.0] + [s for s in sparsities if s > 0],
                                  rounds):
            records.append(dict(_ident(task, model_name, 'lottery', run),
                                sparsity=float(target),
                                achieved=result.sparsity, ticket=result.ticket,
                                random=result.random))
        if progress is not None:
            progress()
    return records


def quant_comparison(task: Task, model_name: str, runs: int,
                     methods: Sequence[Method], epochs: int,
                     finetune_epochs: int, lr: float = 0.01,
                     finetune_lr: float = 0.005, repeats: int = 10,
                     progress: Optional[Callable[[], None]] = None
                     ) -> List[dict]:
    r"""Per run: trains the float model, then quantizes a copy with each
    method (:func:`~pyg_qgnn.quantize_model`) and fine-tunes it; records the
    test score, training time, :func:`pyg_qgnn.deploy.save` bytes, average
    bits and the cost of fake-quantized inference (the paper's Tables 7
    and 8)."""
    records = []
    for run in task.runs(runs):
        seed_everything(run)
        dense = task.make_model(model_name)
        start = time.perf_counter()
        dense_score = task.train(dense, run, epochs, lr)
        dense_time = time.perf_counter() - start
        dense_bytes = file_size(dense)
        for method in methods:
            if method.name == 'fp32':
                model, score, duration, bits = dense, dense_score, \
                    dense_time, 32.0
            else:
                scheme = method.scheme()
                model = quantize_model(dense, scheme)
                start = time.perf_counter()
                score = task.train(model, run, finetune_epochs, finetune_lr,
                                   penalty=method.penalty(scheme),
                                   quant_lr=method.quant_lr)
                duration = time.perf_counter() - start
                bits = method.average_bits(model, scheme)
            records.append(dict(
                _ident(task, model_name, 'quant', run), method=method.label,
                bits=method.bits, avg_bits=bits, score=score,
                train_time_s=duration, bytes=file_size(model),
                dense_bytes=dense_bytes,
                **_inference_usage(task, model, run, repeats)))
            if progress is not None:
                progress()
    return records


# Aggregation #################################################################

#: The fields that tell a setting apart (a row groups the runs of one).
SETTING = ('part', 'task', 'dataset', 'source', 'model', 'metric', 'scope',
           'finetuned', 'sparsity', 'rate', 'threshold', 'method', 'bits',
           'energy_source')


def aggregate(records: Sequence[dict]) -> List[dict]:
    r"""One row per setting: its fields, the number of runs, and for each
    numeric measurement :obj:`<name>_mean` and :obj:`<name>_std` over runs
    (:obj:`None` where it is unavailable, e.g. energy without RAPL); the
    per-layer sparsities are averaged into :obj:`layers`."""
    groups: Dict[tuple, List[dict]] = {}
    for record in records:
        key = tuple(record.get(f) for f in SETTING)
        groups.setdefault(key, []).append(record)
    rows = []
    for key, members in groups.items():
        row = {f: v for f, v in zip(SETTING, key) if v is not None}
        row['runs'] = len(members)
        for name, value in members[0].items():
            if name in SETTING or name == 'run' or isinstance(value, bool):
                continue
            if name == 'layers':
                row['layers'] = {layer: summarize(
                    [m['layers'][layer] for m in members]).mean
                    for layer in value}
            elif isinstance(value, (int, float)) or value is None:
                values = [m[name] for m in members if m.get(name) is not None]
                if values:
                    stats = summarize(values)
                    row[f'{name}_mean'], row[f'{name}_std'] = stats.mean, \
                        stats.std
                else:
                    row[f'{name}_mean'] = row[f'{name}_std'] = None
        rows.append(row)
    return rows
