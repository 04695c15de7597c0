r"""Compare quantization methods on one task: train the float model, then
quantize a copy with each method and fine-tune it, for every seed (node
tasks) or fold (graph tasks); one :class:`MethodRow` per method."""
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from torch import nn

from pyg_qgnn import deploy
from pyg_qgnn.quantize import quantize_model
from pyg_qgnn.train.graph import Fold, train_graph_classifier
from pyg_qgnn.train.methods import Method
from pyg_qgnn.train.node import train_node_classifier
from pyg_qgnn.train.results import markdown_table, seed_everything, \
    summarize


@dataclass
class MethodRow:
    r"""Test accuracy (mean ± std over seeds or folds) of one method, its
    average bit width and the size of the file :func:`deploy.save` writes."""
    method: str
    bits: int
    acc_mean: float
    acc_std: float
    avg_bits: float
    bytes: int
    runs: int


def file_size(model: nn.Module) -> int:
    r"""Bytes of :obj:`model` as written by :func:`pyg_qgnn.deploy.save`."""
    with tempfile.TemporaryDirectory() as tmp:
        return deploy.save(model, os.path.join(tmp, 'model.safetensors'))


class _Tally:
    def __init__(self, methods: Sequence[Method]):
        self.methods = list(methods)
        self.accs: Dict[Method, List[float]] = {m: [] for m in methods}
        self.bits: Dict[Method, List[float]] = {m: [] for m in methods}
        self.bytes: Dict[Method, int] = {}

    def add(self, method: Method, acc: float, bits: float, model: nn.Module):
        self.accs[method].append(acc)
        self.bits[method].append(bits)
        self.bytes[method] = file_size(model)

    def rows(self) -> List[MethodRow]:
        rows = []
        for m in self.methods:
            acc = summarize(self.accs[m])
            rows.append(MethodRow(m.label, m.bits, acc.mean, acc.std,
                                  summarize(self.bits[m]).mean,
                                  self.bytes[m], acc.n))
        return rows


def _float_first(methods: Sequence[Method]) -> List[Method]:
    float_methods = [m for m in methods if m.name == 'fp32']
    return float_methods[:1] + [m for m in methods if m.name != 'fp32']


def compare_on_nodes(make_model: Callable[[], nn.Module], data,
                     methods: Sequence[Method], seeds: int, epochs: int,
                     finetune_epochs: int, lr: float = 0.01,
                     finetune_lr: float = 0.005,
                     progress: Optional[Callable[[], None]] = None,
                     on_model: Optional[Callable[[Method, nn.Module], None]]
                     = None) -> List[MethodRow]:
    r"""Per seed: trains :obj:`make_model()` in float for :obj:`epochs`,
    then each quantized method from those weights for
    :obj:`finetune_epochs`; every model is selected on validation accuracy
    and scored on the test mask. :obj:`progress()` follows each model;
    :obj:`on_model(method, model)` is called with each trained model once
    it is scored (a seed's float model before its quantized copies), e.g.
    to deploy it (:class:`~pyg_qgnn.train.deployed.DeploymentTally`)."""
    methods = _float_first(methods)
    tally = _Tally(methods)
    for seed in range(seeds):
        seed_everything(seed)
        model = make_model()
        result = train_node_classifier(model, data, epochs, lr=lr)
        for method in methods:
            if method.name == 'fp32':
                tally.add(method, result.test_acc, 32, model)
            else:
                scheme = method.scheme()
                qmodel = quantize_model(model, scheme)
                qresult = train_node_classifier(
                    qmodel, data, finetune_epochs, lr=finetune_lr,
                    penalty=method.penalty(scheme), quant_lr=method.quant_lr,
                    admissible=method.admissible(scheme))
                tally.add(method, qresult.test_acc,
                          method.average_bits(qmodel, scheme), qmodel)
            if on_model is not None:
                on_model(method, model if method.name == 'fp32' else qmodel)
            if progress is not None:
                progress()
    return tally.rows()


def compare_on_graphs(make_model: Callable[[], nn.Module], dataset,
                      methods: Sequence[Method], folds: Sequence[Fold],
                      epochs: int, finetune_epochs: int, lr: float = 0.01,
                      finetune_lr: float = 0.005, batch_size: int = 128,
                      progress: Optional[Callable[[], None]] = None,
                      on_model: Optional[Callable[[Method, nn.Module, Fold],
                                                  None]] = None
                      ) -> List[MethodRow]:
    r"""Per fold: trains :obj:`make_model()` in float, then each quantized
    method from those weights, selecting every model on the fold's
    validation graphs and scoring it on its test graphs;
    :obj:`on_model(method, model, fold)` is called with each trained model
    once it is scored, as in :func:`compare_on_nodes`."""
    methods = _float_first(methods)
    tally = _Tally(methods)
    for i, fold in enumerate(folds):
        seed_everything(i)
        model = make_model()
        _, test, _, _ = train_graph_classifier(model, dataset, fold, epochs,
                                               batch_size, lr=lr)
        for method in methods:
            if method.name == 'fp32':
                tally.add(method, test, 32, model)
            else:
                scheme = method.scheme()
                qmodel = quantize_model(model, scheme)
                _, qtest, _, _ = train_graph_classifier(
                    qmodel, dataset, fold, finetune_epochs, batch_size,
                    lr=finetune_lr, penalty=method.penalty(scheme),
                    quant_lr=method.quant_lr,
                    admissible=method.admissible(scheme))
                tally.add(method, qtest, method.average_bits(qmodel, scheme),
                          qmodel)
            if on_model is not None:
                on_model(method, model if method.name == 'fp32' else qmodel,
                         fold)
            if progress is not None:
                progress()
    return tally.rows()


def format_rows(rows: Sequence[MethodRow]) -> str:
    r"""The rows as a markdown table, sizes relative to the first row."""
    base = rows[0].bytes
    return markdown_table(
        ['method', 'bits', 'test accuracy (mean ± std)', 'avg bits',
         'file bytes', 'size ratio'],
        [[r.method, r.bits, f'{100 * r.acc_mean:.2f} ± {100 * r.acc_std:.2f}',
          f'{r.avg_bits:.2f}', r.bytes, f'{base / r.bytes:.2f}x']
         for r in rows])


def plot_rows(rows: Sequence[MethodRow], path: str, title: str = ''):
    r"""Test accuracy against average bits, one point per method, as a
    PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in rows:
        ax.errorbar(r.avg_bits, 100 * r.acc_mean, yerr=100 * r.acc_std,
                    fmt='o', capsize=3, label=f'{r.method} {r.bits}-bit')
    ax.set_xscale('log', base=2)
    ax.set_xlabel('average bits')
    ax.set_ylabel('test accuracy (%)')
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
