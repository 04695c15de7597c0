r"""The tasks of the compression study (`Khedri et al., 2025
<https://arxiv.org/abs/2510.22058>`_) and their models: a :class:`Task`
knows how to build, train, score and run the models of one (task, dataset)
pair. A *run* is a seed (Cora) or a fold of 10-fold cross-validation (graph
tasks); every model is selected on validation data and scored on test
data."""
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.loader import DataLoader
from torch_geometric.nn import global_mean_pool
from torch_geometric.nn.models import GAE, GCN
from torch_geometric.transforms import NormalizeFeatures, RandomLinkSplit
from torch_geometric.utils import degree

from pyg_qgnn.nn.models.gnn_classifiers import GraphClassifier
from pyg_qgnn.selection import Selection
from pyg_qgnn.train import (
    evaluate_nodes,
    stratified_folds,
    train_graph_classifier,
    train_node_classifier,
)
from pyg_qgnn.train.graph import accuracy
from pyg_qgnn.train.node import Penalty, make_optimizer

#: The study's task names and the datasets each runs on.
TASKS = {'node': ('Cora', ), 'link': ('Cora', ), 'graph': ('PROTEINS', 'BBBP')}


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


class GCNGraphClassifier(GraphClassifier):
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
    pool = staticmethod(global_mean_pool)

    def __init__(self, in_channels: int, num_classes: int,
                 hidden_channels: int = 64, num_layers: int = 3,
                 dropout: float = 0.5):
        super().__init__(in_channels, num_classes, hidden_channels,
                         num_layers, dropout)

    def init_gnn(self, in_channels: int, hidden_channels: int,
                 num_layers: int) -> nn.Module:
        return GCN(in_channels, hidden_channels, num_layers)


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
        selection = Selection()
        for epoch in range(1, epochs + 1):
            model.train()
            optimizer.zero_grad()
            z = model.encode(train.x, train.edge_index)
            loss = model.recon_loss(z, train.pos_edge_label_index)
            if penalty is not None:
                loss = loss + penalty(model)
            loss.backward()
            optimizer.step()
            selection.offer(model, self._score(model, val), epoch)
        selection.restore(model)
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
