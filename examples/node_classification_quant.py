r"""Quantized node classification on a Planetoid graph: FP32 against QAT,
Degree-Quant and A²Q at each bit width, for GCN, GIN, GAT and GraphSAGE.

For every seed the float model is trained, then each quantization method
fine-tunes a quantized copy of it (quantize_model under the method's
scheme); every model is the epoch with the best validation accuracy, scored
on the public test split.

Every quantized model is then deployed (pyg_qgnn.deploy.convert: integer
codes, int8 matrix products and aggregation) and run on the same graph as
the fake-quantized model it comes from.

Columns: model, method and bits; test accuracy of the fake-quantized model
(mean ± std over seeds); the deployed model's test accuracy, which must
equal it; the share of nodes whose predicted class is the same for both
(100%, else a WARNING line follows the table); the average bit width of
node features (A²Q learns one per node); bytes of the file
pyg_qgnn.deploy.save writes; how many times smaller than FP32; bytes the
deployed model holds; milliseconds of one full-graph inference of the
deployed model and of the float model it was fine-tuned from (median over
seeds); float time / deployed time. FP32 rows have no deployed form (–).

Example (Cora from PyG's download or --root, 10 seeds, all models):

    python examples/node_classification_quant.py --json rows.json --plot acc.png
"""
import json
import sys
import time

from torch_geometric.transforms import NormalizeFeatures
from tqdm.auto import tqdm

from pyg_qgnn import cli
from pyg_qgnn.datasets import load_planetoid
from pyg_qgnn.datasets.planetoid import PLANETOID_NAMES
from pyg_qgnn.nn.models import node_classifier
from pyg_qgnn.nn.models.gnn_classifiers import NODE_MODELS
from pyg_qgnn.train import DeploymentTally, compare_on_nodes, \
    deployed_records, format_deployed_rows, plot_rows
from pyg_qgnn.train.methods import add_method_arguments, methods_from_args


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
    methods = methods_from_args(args)
    start = time.perf_counter()
    results = []
    bar = tqdm(total=len(args.model) * args.seeds * len(methods),
               disable=args.no_progress, desc='models x seeds x methods')
    for model_name in args.model:
        deployed = DeploymentTally.on_nodes(data,
                                            min_run_time=args.min_run_time)
        rows = compare_on_nodes(
            lambda: node_classifier(model_name, data.num_features,
                                    graph.num_classes, args.hidden),
            data, methods, args.seeds, args.epochs, args.finetune_epochs,
            lr=args.lr, finetune_lr=args.finetune_lr, progress=bar.update,
            on_model=deployed)
        results.append((model_name, rows, deployed.rows()))
    bar.close()
    for model_name, rows, deployed_rows in results:
        print(f'\n{model_name.upper()} on {name}, {args.seeds} seeds:')
        print(format_deployed_rows(rows, deployed_rows))
    print(f'\n({time.perf_counter() - start:.0f} s)')
    records = [dict(record, model=model_name, dataset=graph.name,
                    source=graph.kind)
               for model_name, rows, deployed_rows in results
               for record in deployed_records(rows, deployed_rows)]
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(records, f, indent=2)
        print(f'rows written to {args.json}')
    if args.plot:
        plot_rows([row for _, rows, _ in results for row in rows], args.plot,
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
    add_method_arguments(parser, a2q_target=2.5)
    parser.add_argument('--min-run-time', type=cli.positive_float,
                        default=0.2,
                        help='seconds of timed inference runs of each '
                        'deployed model and of its float model (default: 0.2)')
    cli.add_output_arguments(parser, 'accuracy against average bits')
    return parser


if __name__ == '__main__':
    sys.exit(cli.run(main, build_parser()))
