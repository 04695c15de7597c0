r"""Demo section ``quant``: a float 2-layer GCN on a Planetoid graph
against its quantized copies, made with quantize_model under QAT and
Degree-Quant at each bit width and under A²Q (learned per-node bit widths),
each fine-tuned from the float weights, then deployed
(pyg_qgnn.deploy.convert: integer codes, int8 matrix products and
aggregation) and run on the same graph.

Columns: method and bits; test accuracy of the epoch with the best
validation accuracy (mean ± std over seeds); the deployed model's test
accuracy, which must equal it; the share of nodes whose predicted class is
the same for both (100%, else a WARNING line follows the table); the
average bit width of node features (A²Q learns it); bytes of the
safetensors file that pyg_qgnn.deploy.save writes (quantized weights
bit-packed); how many times smaller than the float file; bytes the deployed
model holds; milliseconds of one full-graph inference of the deployed model
and of the float GCN it was fine-tuned from (median over seeds); float time
/ deployed time. FP32 has no deployed form (–).
"""
from typing import List, Optional, Sequence

from torch_geometric.transforms import NormalizeFeatures
from tqdm.auto import tqdm

from pyg_qgnn import cli
from pyg_qgnn.datasets import load_planetoid
from pyg_qgnn.datasets.planetoid import PLANETOID_NAMES, LoadedGraph
from pyg_qgnn.nn.models import node_classifier
from pyg_qgnn.train import DeploymentTally, Method, compare_on_nodes, \
    deployed_records, format_deployed_rows, plot_rows

#: Seconds of timed inference per deployed model and per float model: the
#: section's 15 quantized models stay within a few seconds of timing.
MIN_RUN_TIME = 0.1


def quant_methods(bits: Sequence[int], observer: str = 'per',
                  names: Sequence[str] = ('qat', 'dq', 'a2q'),
                  a2q_bits: int = 4,
                  a2q_target: Optional[float] = 2.5) -> List[Method]:
    r"""FP32, then QAT and Degree-Quant at each of :obj:`bits`, then A²Q
    (those of them in :obj:`names`)."""
    methods = [Method('fp32')]
    for name in ('qat', 'dq'):
        if name in names:
            methods += [Method(name, b, observer) for b in bits]
    if 'a2q' in names:
        methods.append(Method('a2q', a2q_bits, a2q_target=a2q_target))
    return methods


def run_quant(dataset: str = 'Cora', root: Optional[str] = None,
              seeds: int = 5, epochs: int = 200, finetune_epochs: int = 100,
              methods: Sequence[Method] = tuple(quant_methods((8, 4))),
              progress: bool = True):
    r"""Rows of the quant section, their deployed rows
    (:class:`~pyg_qgnn.train.DeployedRow`) and the :class:`LoadedGraph`
    they come from (its :obj:`kind` says :obj:`"real"` or
    :obj:`"synthetic"`)."""
    for name, value in dict(seeds=seeds, epochs=epochs,
                            finetune_epochs=finetune_epochs).items():
        if value < 1:
            raise ValueError(f"'{name}' must be a positive integer "
                             f"(got {value})")
    graph = load_planetoid(dataset, root)
    data = NormalizeFeatures()(graph.data)  # row-normalized, as Kipf & Welling
    print(f'[pyg_qgnn] {graph.name}: {data.num_nodes} nodes, '
          f'{data.num_edges} edges, {graph.num_classes} classes '
          f'(from {graph.source}); {graph.split}')
    deployed = DeploymentTally.on_nodes(data, min_run_time=MIN_RUN_TIME)
    with tqdm(total=seeds * len(methods), disable=not progress,
              desc='seeds x methods') as bar:
        rows = compare_on_nodes(
            lambda: node_classifier('gcn', data.num_features,
                                    graph.num_classes),
            data, methods, seeds, epochs, finetune_epochs,
            progress=bar.update, on_model=deployed)
    return rows, deployed.rows(), graph


def title(graph: LoadedGraph, seeds: int) -> str:
    r"""Names the dataset, and says so loudly when it is a stand-in."""
    name = (f'a SYNTHETIC stand-in for {graph.name} (not {graph.name}; '
            f'accuracies are not comparable)' if graph.synthetic
            else graph.name)
    return (f'GCN on {name}: test accuracy of the model with the best '
            f'validation accuracy, over {seeds} seeds')


def run(args) -> List[dict]:
    methods = quant_methods(args.bits, args.observer, args.methods,
                            args.a2q_bits, args.a2q_target)
    with cli.user_input('--root' if args.root else '--dataset'):
        rows, deployed, graph = run_quant(args.dataset, args.root,
                                          args.seeds, args.epochs,
                                          args.finetune_epochs, methods,
                                          progress=not args.no_progress)
    print()
    print(title(graph, args.seeds))
    print(format_deployed_rows(rows, deployed))
    plot = args.plot_path('quant')
    if plot:
        plot_rows(rows, plot, title(graph, args.seeds))
        print(f'plot written to {plot}')
    return [dict(record, section='quant', dataset=graph.name,
                 source=graph.kind)
            for record in deployed_records(rows, deployed)]


def add_arguments(parser):
    parser.add_argument('--dataset', default='Cora',
                        type=cli.choice(list(PLANETOID_NAMES.values())),
                        help='Planetoid name: Cora, CiteSeer or PubMed '
                        '(default: Cora)')
    parser.add_argument('--root', default=None, type=cli.existing_dir,
                        help='folder holding <Name>/raw/ (default: '
                        '$PYG_QGNN_DATA, else ../shared/data, else PyG download, '
                        'else a synthetic stand-in)')
    parser.add_argument('--epochs', type=cli.positive_int, default=200,
                        help='float training epochs (default: 200)')
    parser.add_argument('--finetune-epochs', type=cli.positive_int,
                        default=100,
                        help='fine-tuning epochs of each quantized model '
                        '(default: 100)')
    parser.add_argument('--bits', type=cli.bit_width, nargs='+',
                        default=[8, 4], metavar='BITS',
                        help='QAT and Degree-Quant bit widths, each in 1..8 '
                        '(default: 8 4)')
    parser.add_argument('--observer', default='per', choices=['abs', 'mom', 'per'],
                        help='activation range observer (default: per)')
    parser.add_argument('--methods', nargs='+', default=['qat', 'dq', 'a2q'],
                        type=cli.choice(['qat', 'dq', 'a2q']),
                        help='quantization methods compared with FP32 '
                        '(default: qat dq a2q)')
    parser.add_argument('--a2q-bits', type=cli.bit_width, default=4,
                        metavar='BITS',
                        help='initial A²Q bit width of node features and '
                        'weights, in 1..8 (default: 4)')
    parser.add_argument('--a2q-target', type=cli.number_in(1, 8),
                        default=2.5, metavar='BITS',
                        help='average bit width the A²Q memory penalty pulls '
                        'towards, in [1, 8] (default: 2.5)')
