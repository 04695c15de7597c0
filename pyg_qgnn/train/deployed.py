r"""Trained quantized models against their deployed integer form: the same
evaluation on both, the share of equal predictions, inference time against
the float model, and bytes.

.. code-block:: python

    from pyg_qgnn.train import compare_deployed_on_nodes

    qmodel.eval()                      # a trained QAT, DQ or A²Q model
    result = compare_deployed_on_nodes(qmodel, data, float_model=model)
    result.accuracy == result.fake_quant_accuracy   # and
    result.same_predictions == 1.0
    result.speedup                     # float time / deployed time

A comparison passes a :class:`DeploymentTally` as :obj:`on_model` to
:func:`~pyg_qgnn.train.compare_on_nodes` or
:func:`~pyg_qgnn.train.compare_on_graphs` to deploy every model it trains;
:func:`format_deployed_rows` prints its rows next to the accuracy table.
"""
import copy
import math
import statistics
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils import benchmark
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from pyg_qgnn import deploy
from pyg_qgnn.quantizers import disable_fake_quant
from pyg_qgnn.train.compare import MethodRow, file_size
from pyg_qgnn.train.graph import Fold, _batch_forward
from pyg_qgnn.train.methods import Method
from pyg_qgnn.train.node import _forward
from pyg_qgnn.train.results import Summary, markdown_table, summarize

#: ``inference(model) -> outputs``: one full inference pass (every batch).
Inference = Callable[[nn.Module], List[Tensor]]

#: Why an FP32 row has no deployed form.
FLOAT_SKIP = 'a float model: nothing to deploy'


@dataclass
class Deployment:
    r"""One trained quantized model against its deployed form
    (:func:`compare_deployed`).

    Attributes:
        accuracy (float): Accuracy of the deployed model.
        fake_quant_accuracy (float): Accuracy of the trained model, by the
            same evaluation on the same inputs.
        same_predictions (float): Share of all outputs (every node, every
            graph) whose predicted class is the same for both: :obj:`1.0`
            is the deployment contract.
        time_s (float): Median seconds of one full inference pass of the
            deployed model.
        float_time_s (float): The same for the float model.
        bytes (int): :func:`~pyg_qgnn.deploy.nbytes` of the deployed model.
        float_bytes (int): :func:`~pyg_qgnn.deploy.nbytes` of the float
            model.
        file_bytes (int): Bytes of the deployed model's
            :func:`~pyg_qgnn.deploy.save` file.
        float_file_bytes (int): Bytes of the float model's file.
    """
    accuracy: float
    fake_quant_accuracy: float
    same_predictions: float
    time_s: float
    float_time_s: float
    bytes: int
    float_bytes: int
    file_bytes: int
    float_file_bytes: int

    @property
    def speedup(self) -> float:
        r"""How many times faster the deployed model infers than the float
        one."""
        return self.float_time_s / self.time_s


def _check_min_run_time(min_run_time: float):
    if not min_run_time > 0:
        raise ValueError(f"'min_run_time' must be positive "
                         f"(got {min_run_time})")


def time_pair(first: Callable[[], object], second: Callable[[], object],
              min_run_time: float, rounds: int = 3) -> Tuple[float, float]:
    r"""Median seconds per call of :obj:`first` and of :obj:`second`
    (:meth:`torch.utils.benchmark.Timer.blocked_autorange`, with the threads
    PyTorch uses), each timed for about :obj:`min_run_time` seconds in all.
    Both run once untimed first, and they alternate over :obj:`rounds`
    rounds, so a change in machine load falls on both rather than skewing
    their ratio."""
    _check_min_run_time(min_run_time)
    first()
    second()
    times = ([], [])
    for _ in range(rounds):
        for fn, out in zip((first, second), times):
            timer = benchmark.Timer(stmt='fn()', globals={'fn': fn},
                                    num_threads=torch.get_num_threads())
            out += timer.blocked_autorange(
                min_run_time=min_run_time / rounds).times
    return statistics.median(times[0]), statistics.median(times[1])


def _predictions(outputs: Sequence[Tensor]) -> Tensor:
    return torch.cat([out.argmax(dim=-1) for out in outputs])


def _accuracy(pred: Tensor, targets: Tensor, mask: Optional[Tensor]) -> float:
    if mask is not None:
        pred, targets = pred[mask], targets[mask]
    return float((pred == targets).float().mean())


def compare_deployed(model: nn.Module, inference: Inference,
                     targets: Tensor, mask: Optional[Tensor] = None,
                     float_model: Optional[nn.Module] = None,
                     min_run_time: float = 0.2) -> Deployment:
    r"""Converts the trained :obj:`model` with
    :func:`~pyg_qgnn.deploy.convert` and compares both on
    :obj:`inference`.

    Args:
        model (torch.nn.Module): A trained quantized model in evaluation
            mode (QAT, Degree-Quant, A²Q).
        inference (callable): :obj:`inference(model)` runs one full
            inference pass and returns its outputs (logits, one tensor per
            batch); it is what is timed.
        targets (torch.Tensor): The labels of all outputs, concatenated.
        mask (torch.Tensor, optional): The outputs that count for accuracy
            (say the test nodes); :obj:`None` for all. Equal predictions
            are counted over all outputs. (default: :obj:`None`)
        float_model (torch.nn.Module, optional): The float model to time
            against, in evaluation mode (the one :obj:`model` was
            quantized from: time does not depend on the weights' values);
            :obj:`None` for a copy of :obj:`model` with fake quantization
            off, the float model of the same weights. (default: :obj:`None`)
        min_run_time (float, optional): Seconds of timed runs for each
            model. (default: :obj:`0.2`)
    """
    _check_min_run_time(min_run_time)
    if float_model is not None and any(m.training
                                       for m in float_model.modules()):
        raise ValueError("'float_model' is in training mode; call "
                         "float_model.eval() before timing its inference")
    deployed = deploy.convert(model)  # refuses a model in training mode
    if float_model is None:
        float_model = copy.deepcopy(model)
        float_model.apply(disable_fake_quant)

    def run(module: nn.Module) -> List[Tensor]:
        with torch.no_grad():
            return inference(module)

    fake_pred = _predictions(run(model))
    pred = _predictions(run(deployed))
    targets = targets.view(-1)
    if pred.numel() != targets.numel():
        raise ValueError(f"'targets' has {targets.numel()} labels but the "
                         f"inference gives {pred.numel()} outputs")
    float_time, deployed_time = time_pair(lambda: run(float_model),
                                          lambda: run(deployed), min_run_time)
    return Deployment(
        accuracy=_accuracy(pred, targets, mask),
        fake_quant_accuracy=_accuracy(fake_pred, targets, mask),
        same_predictions=float((pred == fake_pred).float().mean()),
        time_s=deployed_time, float_time_s=float_time,
        bytes=deploy.nbytes(deployed), float_bytes=deploy.nbytes(float_model),
        file_bytes=file_size(deployed),
        float_file_bytes=file_size(float_model))


def compare_deployed_on_nodes(model: nn.Module, data: Data,
                              mask: str = 'test_mask',
                              float_model: Optional[nn.Module] = None,
                              min_run_time: float = 0.2) -> Deployment:
    r""":func:`compare_deployed` on full-batch node classification: the
    model called on the whole graph as in training
    (:func:`~pyg_qgnn.train.train_node_classifier`), accuracy on the nodes
    of :obj:`data[mask]`."""
    return compare_deployed(model, lambda m: [_forward(m, data)], data.y,
                            data[mask], float_model, min_run_time)


def compare_deployed_on_graphs(model: nn.Module, dataset,
                               batch_size: int = 128,
                               float_model: Optional[nn.Module] = None,
                               min_run_time: float = 0.2) -> Deployment:
    r""":func:`compare_deployed` on graph classification: one inference pass
    is the model called on every batch of :obj:`dataset` (say the test
    graphs of a fold) as :func:`~pyg_qgnn.train.train_graph_classifier`
    batches them. Batches are collated once, before timing."""
    batches = list(DataLoader(dataset, batch_size))
    targets = torch.cat([batch.y.view(-1) for batch in batches])
    return compare_deployed(
        model, lambda m: [_batch_forward(m, batch) for batch in batches],
        targets, None, float_model, min_run_time)


@dataclass
class DeployedRow:
    r"""The deployed form of one method over seeds or folds, to merge with
    its :class:`~pyg_qgnn.train.MethodRow` (same :obj:`method` and
    :obj:`bits`). Times are medians over the runs, accuracies mean and std,
    :obj:`same_predictions` the smallest share of any run, over
    :obj:`deployed_runs` runs. Every measured field is :obj:`None` where
    :obj:`not_deployed` gives the reason."""
    method: str
    bits: int
    deployed_acc_mean: Optional[float] = None
    deployed_acc_std: Optional[float] = None
    fake_quant_acc_mean: Optional[float] = None
    same_predictions: Optional[float] = None
    deployed_time_s: Optional[float] = None
    float_time_s: Optional[float] = None
    speedup: Optional[float] = None
    deployed_bytes: Optional[int] = None
    float_bytes: Optional[int] = None
    deployed_file_bytes: Optional[int] = None
    float_file_bytes: Optional[int] = None
    deployed_runs: Optional[int] = None
    not_deployed: Optional[str] = None

    @classmethod
    def of(cls, method: Method, results: Sequence[Deployment]
           ) -> 'DeployedRow':
        acc = summarize([r.accuracy for r in results])
        deployed_time = statistics.median(r.time_s for r in results)
        float_time = statistics.median(r.float_time_s for r in results)
        last = results[-1]  # sizes are the same in every run
        return cls(method.label, method.bits, acc.mean, acc.std,
                   summarize([r.fake_quant_accuracy for r in results]).mean,
                   min(r.same_predictions for r in results), deployed_time,
                   float_time, float_time / deployed_time, last.bytes,
                   last.float_bytes,
                   last.file_bytes, last.float_file_bytes, len(results))


class DeploymentTally:
    r"""Deploys every quantized model a comparison trains and keeps the
    results per method: pass it as :obj:`on_model` to
    :func:`~pyg_qgnn.train.compare_on_nodes` (built by :meth:`on_nodes`) or
    :func:`~pyg_qgnn.train.compare_on_graphs` (:meth:`on_graphs`).

    The float model of each seed or fold (the FP32 row, which comparisons
    train first) is the one the following quantized models are timed
    against; FP32 rows themselves are not deployed (:obj:`FLOAT_SKIP`).

    Args:
        compare (callable): :obj:`compare(model, *split, float_model=...)`
            returns the :class:`Deployment` of a trained model, where
            :obj:`split` is what the comparison passes after the model
            (a fold for graphs).
    """
    def __init__(self, compare: Callable[..., Deployment]):
        self.compare = compare
        self.results: Dict[Method, List[Deployment]] = {}
        self.methods: List[Method] = []
        self._float_model: Optional[nn.Module] = None

    @classmethod
    def on_nodes(cls, data: Data, mask: str = 'test_mask',
                 min_run_time: float = 0.2) -> 'DeploymentTally':
        r"""Each model by :func:`compare_deployed_on_nodes` on :obj:`data`."""
        return cls(lambda model, float_model: compare_deployed_on_nodes(
            model, data, mask, float_model, min_run_time))

    @classmethod
    def on_graphs(cls, dataset, batch_size: int = 128,
                  min_run_time: float = 0.2) -> 'DeploymentTally':
        r"""Each model by :func:`compare_deployed_on_graphs` on the test
        graphs of its fold."""
        return cls(lambda model, fold, float_model: compare_deployed_on_graphs(
            model, dataset[fold[2]], batch_size, float_model, min_run_time))

    def __call__(self, method: Method, model: nn.Module, *split: Fold):
        if method not in self.results:
            self.methods.append(method)
            self.results[method] = []
        if method.name == 'fp32':
            self._float_model = model
            return
        self.results[method].append(
            self.compare(model, *split, float_model=self._float_model))

    def rows(self) -> List[DeployedRow]:
        r"""One :class:`DeployedRow` per method, in the order seen."""
        return [DeployedRow.of(m, self.results[m]) if m.name != 'fp32'
                else DeployedRow(m.label, m.bits, not_deployed=FLOAT_SKIP)
                for m in self.methods]


def _paired(rows: Sequence[MethodRow], deployed: Sequence[DeployedRow]):
    if [(r.method, r.bits) for r in rows] != \
            [(d.method, d.bits) for d in deployed]:
        raise ValueError(f"'deployed' must have one row per row of 'rows', "
                         f"in the same order (got "
                         f"{[(d.method, d.bits) for d in deployed]} for "
                         f"{[(r.method, r.bits) for r in rows]})")
    return zip(rows, deployed)


def deployed_records(rows: Sequence[MethodRow],
                     deployed: Sequence[DeployedRow]) -> List[dict]:
    r"""The fields of each :class:`~pyg_qgnn.train.MethodRow` and of its
    :class:`DeployedRow`, as one JSON-able dict per method."""
    return [dict(asdict(row), **asdict(extra))
            for row, extra in _paired(rows, deployed)]


def _share(value: float) -> str:
    # Rounded down, so a single differing prediction never shows as 100%.
    return '100%' if value == 1.0 else f'{math.floor(1e4 * value) / 100:.2f}%'


def deployment_warnings(deployed: Sequence[DeployedRow]) -> List[str]:
    r"""One line per deployed method whose predictions differ from the
    fake-quantized model's anywhere (the deployment contract is equal
    predictions)."""
    return [f'WARNING: deployed {d.method} {d.bits}-bit predicts another '
            f'class than the fake-quantized model for '
            f'{100 * (1 - d.same_predictions):.3g}% of the outputs (deployed '
            f'accuracy {100 * d.deployed_acc_mean:.2f}, fake-quantized '
            f'{100 * d.fake_quant_acc_mean:.2f}); deployment should be exact'
            for d in deployed
            if d.same_predictions is not None and d.same_predictions < 1.0]


def format_deployed_rows(rows: Sequence[MethodRow],
                         deployed: Sequence[DeployedRow]) -> str:
    r"""The accuracy table of :func:`~pyg_qgnn.train.format_rows` with the
    deployed columns: deployed accuracy, share of equal predictions,
    deployed bytes, deployed and float inference time (ms) and the
    speed-up; then :func:`deployment_warnings`, if any."""
    base = rows[0].bytes
    lines = []
    for r, d in _paired(rows, deployed):
        measured = d.not_deployed is None
        lines.append([
            r.method, r.bits, Summary(r.acc_mean, r.acc_std, r.runs).format(),
            Summary(d.deployed_acc_mean, d.deployed_acc_std, r.runs).format()
            if measured else '–',
            _share(d.same_predictions) if measured else '–',
            f'{r.avg_bits:.2f}', r.bytes, f'{base / r.bytes:.2f}x',
            d.deployed_bytes if measured else '–',
            f'{1e3 * d.deployed_time_s:.2f}' if measured else '–',
            f'{1e3 * d.float_time_s:.2f}' if measured else '–',
            f'{d.speedup:.2f}x' if measured else '–'])
    table = markdown_table(
        ['method', 'bits', 'test accuracy (mean ± std)', 'deployed accuracy',
         'same predictions', 'avg bits', 'file bytes', 'size ratio',
         'deployed bytes', 'deployed ms', 'float ms', 'speed-up'], lines)
    return '\n'.join([table] + deployment_warnings(deployed))
