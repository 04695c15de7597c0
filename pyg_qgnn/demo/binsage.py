r"""Demo section ``binsage``: GraphSAGE on a Planetoid graph (public split)
against the binary GraphSAGE of Bahri et al. (BinGraphSAGE: 1-bit weights
in every layer, +-1 hidden features; the first layer reads the real
features and the last layer's output stays real), trained from scratch and
distilled from the float model just trained (logit matching on the
training nodes: temperature T, weight alpha of the teacher's term). Each
binary model is then deployed (pyg_qgnn.deploy.convert: packed weights,
hidden features aggregated as integers, binary products) and run on the
same graph.

Columns: model; test accuracy of the epoch with the best validation
accuracy (mean ± std over seeds); the deployed model's test accuracy, which
must equal it; the share of nodes whose predicted class is the same for
the deployed and the fake-quantized model (100%, else a WARNING line
follows the table); bytes of the safetensors file that pyg_qgnn.deploy.save
writes (the float model as trained, the binary model deployed); how many
times smaller than the float file; milliseconds of one full-graph inference
of the deployed model and of the float GraphSAGE (median over seeds), and
float time / deployed time. The float model has no deployed form (–).
"""
import statistics
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch_geometric.nn.models import GraphSAGE
from torch_geometric.transforms import NormalizeFeatures
from torch_geometric.utils import to_torch_csr_tensor
from tqdm.auto import tqdm

from pyg_qgnn import cli
from pyg_qgnn.datasets import load_planetoid
from pyg_qgnn.datasets.planetoid import LoadedGraph
from pyg_qgnn.nn.models import BinGraphSAGE
from pyg_qgnn.train import (
    Deployment,
    NodeResult,
    Summary,
    compare_deployed_on_nodes,
    file_size,
    markdown_table,
    seed_everything,
    summarize,
    train_node_classifier,
)
from pyg_qgnn.train.deployed import _share

#: Seconds of timed inference per deployed and per float model.
MIN_RUN_TIME = 0.1
#: The three models, in the order of the table.
FLOAT, SCRATCH, DISTILLED = ('GraphSAGE', 'BinGraphSAGE (scratch)',
                             'BinGraphSAGE (distilled)')

#: One trained model of one seed: its result, its deployment (None for
#: the float model) and the bytes of its file.
Run = Tuple[NodeResult, Optional[Deployment], int]


def run_binsage(dataset: str = 'Cora', root: Optional[str] = None,
                seeds: int = 1, hidden: int = 64, layers: int = 2,
                float_epochs: int = 100, epochs: int = 150,
                lr: float = 0.01, temperature: float = 3.0,
                alpha: float = 0.1, dropout: float = 0.5,
                progress: Optional[Callable[[], None]] = None
                ) -> Tuple[Dict[str, List[Run]], LoadedGraph]:
    r"""Per seed: a float :class:`GraphSAGE` trained for
    :obj:`float_epochs` (Adam, learning rate 0.01, weight decay 5e-4), then
    two :class:`~pyg_qgnn.nn.BinGraphSAGE` of the same shape trained for
    :obj:`epochs` (learning rate :obj:`lr`, no weight decay), from scratch
    and with logit matching from the float model's logits; each model is
    selected on validation accuracy and scored on the test nodes, each
    binary one deployed and compared
    (:func:`~pyg_qgnn.train.compare_deployed_on_nodes`). Returns the runs
    of each model (:obj:`FLOAT`, :obj:`SCRATCH`, :obj:`DISTILLED`) and the
    :class:`LoadedGraph`. :obj:`progress()` follows each trained model."""
    for name, value in dict(seeds=seeds, hidden=hidden, layers=layers,
                            float_epochs=float_epochs, epochs=epochs).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"'{name}' must be a positive integer "
                             f"(got {value!r})")
    graph = load_planetoid(dataset, root)
    data = NormalizeFeatures()(graph.data.clone())
    print(f'[pyg_qgnn] {graph.name}: {data.num_nodes} nodes, '
          f'{data.num_edges} edges, {graph.num_classes} classes '
          f'(from {graph.source}); {graph.split}')
    # The transposed adjacency as a CSR tensor: every model takes it, and
    # it aggregates about twice as fast as an edge_index scatter.
    data.edge_index = to_torch_csr_tensor(data.edge_index.flip(0),
                                          size=(data.num_nodes, ) * 2)
    shape = dict(in_channels=data.num_features, hidden_channels=hidden,
                 num_layers=layers, out_channels=graph.num_classes,
                 dropout=dropout, aggr='mean')
    runs: Dict[str, List[Run]] = {FLOAT: [], SCRATCH: [], DISTILLED: []}
    for seed in range(seeds):
        seed_everything(seed)
        float_model = GraphSAGE(**shape)
        result = train_node_classifier(float_model, data, float_epochs)
        runs[FLOAT].append((result, None, file_size(float_model)))
        if progress is not None:
            progress()
        float_model.eval()
        with torch.no_grad():
            teacher = float_model(data.x, data.edge_index)
        for label, logits in ((SCRATCH, None), (DISTILLED, teacher)):
            seed_everything(seed)
            binary = BinGraphSAGE(**shape)
            result = train_node_classifier(
                binary, data, epochs, lr=lr, weight_decay=0.0,
                teacher_logits=logits, temperature=temperature, alpha=alpha)
            deployment = compare_deployed_on_nodes(
                binary.eval(), data, float_model=float_model,
                min_run_time=MIN_RUN_TIME)
            runs[label].append((result, deployment, deployment.file_bytes))
            if progress is not None:
                progress()
    return runs, graph


def summary_rows(runs: Dict[str, List[Run]]) -> List[dict]:
    r"""One JSON-able row per model: accuracies as mean and std over seeds,
    times as medians, the smallest share of equal predictions."""
    rows = []
    for label, model_runs in runs.items():
        acc = summarize([result.test_acc for result, _, _ in model_runs])
        row = dict(model=label, runs=acc.n, acc_mean=acc.mean,
                   acc_std=acc.std, file_bytes=model_runs[-1][2])
        deployments = [d for _, d, _ in model_runs if d is not None]
        if deployments:
            deployed = summarize([d.accuracy for d in deployments])
            row.update(
                deployed_acc_mean=deployed.mean,
                deployed_acc_std=deployed.std,
                fake_quant_acc_mean=summarize(
                    [d.fake_quant_accuracy for d in deployments]).mean,
                same_predictions=min(d.same_predictions
                                     for d in deployments),
                float_file_bytes=deployments[-1].float_file_bytes,
                deployed_time_s=statistics.median(d.time_s
                                                  for d in deployments),
                float_time_s=statistics.median(d.float_time_s
                                               for d in deployments))
        rows.append(row)
    return rows


def table(rows: List[dict]) -> str:
    r"""The rows as a markdown table, then a WARNING line per deployed model
    whose predictions differ from the fake-quantized model's."""
    float_bytes = rows[0]['file_bytes']
    lines, warnings = [], []
    for r in rows:
        deployed = 'same_predictions' in r
        cells = [r['model'], Summary(r['acc_mean'], r['acc_std'],
                                     r['runs']).format()]
        if deployed:
            cells += [Summary(r['deployed_acc_mean'], r['deployed_acc_std'],
                              r['runs']).format(),
                      _share(r['same_predictions'])]
        else:
            cells += ['–', '–']
        cells += [r['file_bytes'], f"{float_bytes / r['file_bytes']:.1f}x"]
        if deployed:
            cells += [f"{1e3 * r['deployed_time_s']:.2f}",
                      f"{1e3 * r['float_time_s']:.2f}",
                      f"{r['float_time_s'] / r['deployed_time_s']:.2f}x"]
        else:
            cells += ['–', '–', '–']
        lines.append(cells)
        if deployed and r['same_predictions'] < 1.0:
            warnings.append(
                f"WARNING: deployed {r['model']} predicts another class than "
                f"the fake-quantized model for "
                f"{100 * (1 - r['same_predictions']):.3g}% of the nodes; "
                f"deployment should be exact")
    return '\n'.join([markdown_table(
        ['model', 'test accuracy (mean ± std)', 'deployed accuracy',
         'same predictions', 'file bytes', 'smaller than float',
         'deployed ms', 'float ms', 'speed-up'], lines)] + warnings)


def title(graph: LoadedGraph, seeds: int, hidden: int, layers: int) -> str:
    r"""Names the dataset, and says so loudly when it is a stand-in."""
    name = (f'a SYNTHETIC stand-in for {graph.name} (not {graph.name}; '
            f'accuracies are not comparable)' if graph.synthetic
            else graph.name)
    return (f'GraphSAGE and BinGraphSAGE ({layers} layers, {hidden} hidden, '
            f'mean aggregation) on {name}: test accuracy of the model with '
            f'the best validation accuracy, over {seeds} seed(s)')


def plot(runs: Dict[str, List[Run]], path: str, name: str):
    r"""Validation accuracy per epoch of each model, mean ± std over
    seeds."""
    from pyg_qgnn.prune.study_report import plot_panels

    series = {}
    for label, model_runs in runs.items():
        curves = [result.history for result, _, _ in model_runs]
        series[label] = [
            (epoch, 100 * acc.mean, 100 * acc.std)
            for epoch, acc in enumerate(
                (summarize([curve[i][2] for curve in curves])
                 for i in range(len(curves[0]))), 1)]
    plot_panels({name: series}, path, 'epoch', 'validation accuracy (%)')


def run(args) -> List[dict]:
    seeds = min(args.seeds, args.binsage_seeds)
    threads = torch.get_num_threads()
    # Cora's models are too small to gain from intra-op threads, and on a
    # busy machine their synchronisation costs more than the work.
    torch.set_num_threads(1)
    try:
        with tqdm(total=3 * seeds, desc='binsage seeds x models',
                  disable=args.no_progress) as bar, \
                cli.user_input('--root' if args.root else '--dataset'), \
                warnings.catch_warnings():
            # torch's notes that sparse CSR is in beta, raised inside PyG.
            warnings.filterwarnings('ignore', message='Sparse CSR tensor')
            warnings.filterwarnings('ignore', message='Sparse invariant')
            runs, graph = run_binsage(
                args.dataset, args.root, seeds, args.binsage_hidden,
                args.binsage_layers, args.binsage_float_epochs,
                args.binsage_epochs, args.binsage_lr,
                args.binsage_temperature, args.binsage_alpha,
                progress=bar.update)
    finally:
        torch.set_num_threads(threads)
    rows = summary_rows(runs)
    heading = title(graph, seeds, args.binsage_hidden, args.binsage_layers)
    print()
    print(heading)
    print(table(rows))
    path = args.plot_path('binsage')
    if path:
        name = f'a SYNTHETIC stand-in for {graph.name}' if graph.synthetic \
            else graph.name
        plot(runs, path, f'{name}, {seeds} seed(s)')
        print(f'plot written to {path}')
    return [dict(row, section='binsage', dataset=graph.name,
                 source=graph.kind, split=graph.split) for row in rows]


def add_arguments(parser):
    parser.add_argument('--binsage-seeds', type=cli.positive_int, default=1,
                        metavar='N',
                        help='binsage: at most this many of --seeds '
                        '(default: 1)')
    parser.add_argument('--binsage-hidden', type=cli.positive_int,
                        default=64, metavar='N',
                        help='binsage: hidden channels (default: 64)')
    parser.add_argument('--binsage-layers', type=cli.positive_int, default=2,
                        metavar='N',
                        help='binsage: layers of both models (default: 2)')
    parser.add_argument('--binsage-float-epochs', type=cli.positive_int,
                        default=100, metavar='N',
                        help='binsage: epochs of the float GraphSAGE '
                        '(default: 100)')
    parser.add_argument('--binsage-epochs', type=cli.positive_int,
                        default=150, metavar='N',
                        help='binsage: epochs of each BinGraphSAGE '
                        '(default: 150)')
    parser.add_argument('--binsage-lr', type=cli.positive_float,
                        default=0.01, metavar='LR',
                        help='binsage: learning rate of the BinGraphSAGE '
                        'models (default: 0.01)')
    parser.add_argument('--binsage-temperature', type=cli.positive_float,
                        default=3.0, metavar='T',
                        help='binsage: distillation temperature (default: 3, '
                        'as the paper)')
    parser.add_argument('--binsage-alpha', type=cli.fraction, default=0.1,
                        metavar='ALPHA',
                        help='binsage: weight of the teacher\'s term in the '
                        'distilled loss, in [0, 1] (default: 0.1, as the '
                        'paper)')
