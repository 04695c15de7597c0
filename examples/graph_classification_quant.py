r"""Quantized graph classification: GIN (5 layers, 64 hidden, sum pooling,
as in Degree-Quant) on a TU dataset, FP32 against QAT, Degree-Quant and A²Q
at each bit width, with stratified 10-fold cross-validation.

Per fold the float GIN is trained, then each method fine-tunes a quantized
copy; every model is the epoch with the best accuracy on the fold's
validation graphs (the previous fold, as in PyG's kernel benchmark), scored
on the fold's test graphs. A²Q serves graphs it never saw through a fixed
pool of per-node parameters chosen by the nearest-neighbour rule.

Every quantized model is then deployed (pyg_qgnn.deploy.convert: integer
codes, int8 matrix products and aggregation) and run on the fold's test
graphs, batch by batch, as the fake-quantized model it comes from.

Columns: method and bits; test accuracy of the fake-quantized model (mean
± std over folds); the deployed model's test accuracy, which must equal it;
the share of test graphs whose predicted class is the same for both (100%,
else a WARNING line follows the table); the average bit width of node
features; bytes of the file pyg_qgnn.deploy.save writes; how many times
smaller than FP32; bytes the deployed model holds; milliseconds of one
inference pass over all test batches of a fold by the deployed model and
by the float model it was fine-tuned from (median over folds); float time
/ deployed time. FP32 rows have no deployed form (–).

Example (PROTEINS from --root or PyG's download):

    python examples/graph_classification_quant.py --dataset PROTEINS --json rows.json

BBBP (MoleculeNet, a CSV of SMILES) needs RDKit: pip install "pyg_qgnn[chem]".
"""
import json
import sys
import time

import torch
from tqdm.auto import tqdm

from pyg_qgnn import cli
from pyg_qgnn.datasets import load_molecules, load_tudataset
from pyg_qgnn.nn.models import GraphClassifier
from pyg_qgnn.train import DeploymentTally, compare_on_graphs, \
    deployed_records, format_deployed_rows, plot_rows, stratified_folds
from pyg_qgnn.train.methods import add_method_arguments, methods_from_args


def load(args):
    if args.dataset.upper() == 'BBBP':
        cli.require_module('rdkit', '--dataset BBBP', extra='chem')
        return load_molecules('BBBP', args.root)
    return load_tudataset(args.dataset, args.root)


def main(args):
    if args.plot:
        cli.require_module('matplotlib', '--plot', extra='plot')
    with cli.user_input('--root' if args.root else '--dataset'):
        loaded = load(args)
    dataset = loaded.dataset
    name = args.dataset if not loaded.synthetic else \
        f'a SYNTHETIC stand-in for {args.dataset}'
    labels = dataset.y.view(-1) if dataset.y is not None else \
        torch.cat([d.y for d in dataset])
    print(f'{name}: {len(dataset)} graphs, {dataset.num_features} features, '
          f'{dataset.num_classes} classes ({loaded.source})')
    with cli.user_input('--folds'):
        folds = stratified_folds(labels, args.folds, args.seed)
    methods = methods_from_args(args, a2q_groups=args.a2q_groups)
    deployed = DeploymentTally.on_graphs(dataset, args.batch_size,
                                         min_run_time=args.min_run_time)
    start = time.perf_counter()
    with tqdm(total=len(folds) * len(methods), disable=args.no_progress,
              desc='folds x methods') as bar:
        rows = compare_on_graphs(
            lambda: GraphClassifier(dataset.num_features, dataset.num_classes,
                                    args.hidden, args.layers),
            dataset, methods, folds, args.epochs, args.finetune_epochs,
            lr=args.lr, finetune_lr=args.finetune_lr,
            batch_size=args.batch_size, progress=bar.update,
            on_model=deployed)
    print(f'\nGIN on {name}, {args.folds}-fold cross-validation:')
    print(format_deployed_rows(rows, deployed.rows()))
    print(f'\n({time.perf_counter() - start:.0f} s)')
    records = [dict(record, model='gin', dataset=args.dataset,
                    source=loaded.kind)
               for record in deployed_records(rows, deployed.rows())]
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(records, f, indent=2)
        print(f'rows written to {args.json}')
    if args.plot:
        plot_rows(rows, args.plot, f'GIN on {name}')
        print(f'plot written to {args.plot}')
    return records


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('--dataset', default='PROTEINS',
                        help='a TU dataset name (PROTEINS, MUTAG, ...) or BBBP '
                        '(default: PROTEINS)')
    parser.add_argument('--root', type=cli.existing_dir, default=None,
                        help='folder holding <Name>/raw/ (BBBP: bbbp/BBBP.csv) '
                        '(default: $PYG_QGNN_DATA, else PyG download, else a '
                        'synthetic stand-in)')
    parser.add_argument('--folds', type=cli.int_at_least(3), default=10,
                        help='cross-validation folds, at least 3: one tests, '
                        'one validates (default: 10)')
    parser.add_argument('--seed', type=cli.nonnegative_int, default=12345,
                        help='seed of the fold split (default: 12345, '
                        'as PyG\'s kernel benchmark)')
    parser.add_argument('--epochs', type=cli.positive_int, default=100,
                        help='float training epochs per fold (default: 100)')
    parser.add_argument('--finetune-epochs', type=cli.positive_int,
                        default=50,
                        help='fine-tuning epochs of each quantized model '
                        '(default: 50)')
    parser.add_argument('--hidden', type=cli.positive_int, default=64,
                        help='hidden channels (default: 64)')
    parser.add_argument('--layers', type=cli.positive_int, default=5,
                        help='GIN layers (default: 5)')
    parser.add_argument('--batch-size', type=cli.positive_int, default=128,
                        help='graphs per batch (default: 128)')
    parser.add_argument('--a2q-groups', type=cli.positive_int, default=64,
                        help='A²Q\'s pool of per-node parameter pairs shared '
                        'by all graphs (default: 64)')
    add_method_arguments(parser, a2q_target=None)
    parser.add_argument('--min-run-time', type=cli.positive_float,
                        default=0.2,
                        help='seconds of timed inference runs of each '
                        'deployed model and of its float model (default: 0.2)')
    cli.add_output_arguments(parser, 'accuracy against average bits')
    return parser


if __name__ == '__main__':
    sys.exit(cli.run(main, build_parser()))
