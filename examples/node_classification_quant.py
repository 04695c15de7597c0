r"""Quantized node classification on a Planetoid graph: FP32 against QAT,
Degree-Quant and A²Q at each bit width, for GCN, GIN, GAT and GraphSAGE.

For every seed the float model is trained, then each quantization method
fine-tunes a quantized copy of it (quantize_model under the method's
scheme); every model is the epoch with the best validation accuracy, scored
on the public test split.

Columns: model, method and bits; test accuracy (mean ± std over seeds);
the average bit width of node features (A²Q learns one per node); bytes of
the file pyg_qgnn.deploy.save writes; how many times smaller than FP32.

Example (Cora from PyG's download or --root, 10 seeds, all models):

    python examples/node_classification_quant.py --json rows.json --plot acc.png
"""
import json
import sys
import time
from dataclasses import asdict

from torch_geometric.transforms import NormalizeFeatures
from tqdm.auto import tqdm

from pyg_qgnn import cli
from pyg_qgnn.datasets import load_planetoid
from pyg_qgnn.datasets.planetoid import PLANETOID_NAMES
from pyg_qgnn.nn.models import node_classifier
from pyg_qgnn.nn.models.gnn_classifiers import NODE_MODELS
from pyg_qgnn.train import METHODS, Method, compare_on_nodes, format_rows, \
    plot_rows


def methods_from(args) -> list:
    methods = []
    for name in args.method:
        if name == 'fp32':
            methods.append(Method('fp32'))
        else:
            methods += [Method(name, bits, args.observer, args.grad,
                               a2q_target=args.a2q_target,
                               quant_lr=args.quant_lr) for bits in args.bits]
    return methods


def main(args):
    if args.plot:
        cli.require_module('matplotlib', '--plot', extra='plot')
    with cli.user_input('--root' if args.root else '--dataset'):
        graph = load_planetoid(args.dataset, args.root)
    data = NormalizeFeatures()(graph.data)
    name = graph.name if not graph.synthetic else \
        f'a SYNTHETIC stand-in for {graph.name}'
    print(f'{name}: {data.num_nodes} nodes, {data.num_edges} edges '
          f'({graph.source}; {graph.split})')
    methods = methods_from(args)
    if 'fp32' not in args.method:
        methods.insert(0, Method('fp32'))  # every method starts from it
    start = time.perf_counter()
    results = []
    bar = tqdm(total=len(args.model) * args.seeds * len(methods),
               disable=args.no_progress, desc='models x seeds x methods')
    for model_name in args.model:
        rows = compare_on_nodes(
            lambda: node_classifier(model_name, data.num_features,
                                    graph.num_classes, args.hidden),
            data, methods, args.seeds, args.epochs, args.finetune_epochs,
            lr=args.lr, finetune_lr=args.finetune_lr, progress=bar.update)
        results.append((model_name, rows))
    bar.close()
    for model_name, rows in results:
        print(f'\n{model_name.upper()} on {name}, {args.seeds} seeds:')
        print(format_rows(rows))
    print(f'\n({time.perf_counter() - start:.0f} s)')
    records = [dict(asdict(row), model=model_name, dataset=graph.name,
                    source=graph.kind)
               for model_name, rows in results for row in rows]
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(records, f, indent=2)
        print(f'rows written to {args.json}')
    if args.plot:
        plot_rows([row for _, rows in results for row in rows], args.plot,
                  f'{", ".join(args.model)} on {name}')
        print(f'plot written to {args.plot}')
    return records


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('--dataset', default='Cora',
                        type=cli.choice(list(PLANETOID_NAMES.values())),
                        help='Planetoid name (default: Cora)')
    parser.add_argument('--root', type=cli.existing_dir, default=None,
                        help='folder holding <Name>/raw/ (default: '
                        '$PYG_QGNN_DATA, else PyG download, else a synthetic '
                        'stand-in)')
    parser.add_argument('--model', nargs='+', default=list(NODE_MODELS),
                        type=cli.choice(list(NODE_MODELS)),
                        help='models to run (default: all)')
    parser.add_argument('--method', nargs='+', default=list(METHODS),
                        type=cli.choice(list(METHODS)),
                        help='methods to compare (default: all)')
    parser.add_argument('--bits', nargs='+', type=cli.bit_width,
                        default=[8, 4],
                        help='bit widths, each in 1..8; A²Q starts at each '
                        '(default: 8 4)')
    parser.add_argument('--seeds', type=cli.positive_int, default=10,
                        help='seeds per method (default: 10)')
    parser.add_argument('--epochs', type=cli.positive_int, default=200,
                        help='float training epochs (default: 200)')
    parser.add_argument('--finetune-epochs', type=cli.positive_int,
                        default=100,
                        help='fine-tuning epochs of each quantized model '
                        '(default: 100)')
    parser.add_argument('--hidden', type=cli.positive_int, default=None,
                        help='hidden channels (per head for GAT) (default: '
                        'GCN 16, GAT 8, SAGE and GIN 64)')
    parser.add_argument('--lr', type=cli.positive_float, default=0.01,
                        help='float learning rate (default: 0.01)')
    parser.add_argument('--finetune-lr', type=cli.positive_float,
                        default=0.005,
                        help='fine-tuning learning rate (default: 0.005)')
    parser.add_argument('--quant-lr', type=cli.positive_float, default=0.05,
                        help='learning rate of A²Q steps and bit widths '
                        '(default: 0.05)')
    parser.add_argument('--observer', choices=['abs', 'mom', 'per'],
                        default='per',
                        help='QAT/DQ range observer (default: per)')
    parser.add_argument('--grad', choices=['ste', 'clipped'], default='ste',
                        help='QAT/DQ gradient: straight-through or clipped '
                        '(the study\'s gc) (default: ste)')
    parser.add_argument('--a2q-target', type=cli.number_in(1, 8),
                        default=2.5,
                        help='average bit width A²Q\'s memory penalty pulls '
                        'towards (default: 2.5)')
    parser.add_argument('--json', type=cli.output_path, metavar='PATH',
                        help='write the rows as a JSON list')
    parser.add_argument('--plot', type=cli.output_path, metavar='PATH',
                        help='write accuracy against average bits as a PNG')
    parser.add_argument('--no-progress', action='store_true',
                        help='hide the progress bar')
    return parser


if __name__ == '__main__':
    sys.exit(cli.run(main, build_parser()))
