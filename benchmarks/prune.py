r"""Pruning: what exact sparse checkpoints save, and what structured
pruning buys at inference.

Metric :obj:`bytes`, cases :obj:`gcn_s{sparsity}_{fp32|int8}`: a
Cora-sized 2-layer GCN (:obj:`--bytes-features` inputs, :obj:`--bytes-hidden`
hidden channels, 7 classes), pruned by global magnitude pruning from its
random initialisation (random-looking masks, the hard case for position
coding), saved by :func:`pyg_qgnn.prune.save_sparse` with fp32 or int8
values (candidate) against the dense :func:`pyg_qgnn.deploy.save` file
(baseline). Each file is loaded back and checked to restore every tensor
exactly (int8: exactly the rounded values) before it is counted.

Metric :obj:`infer`, case :obj:`gcn{layers}_n{nodes}_c{removed}`: one
inference pass of a GCN (:obj:`--features` inputs, :obj:`--hidden` hidden
channels, :obj:`--layers` layers, cached normalization) over a random graph,
dense (baseline) against the same model after
:func:`pyg_qgnn.prune.prune_channels` removed the share :obj:`--removed`
of every hidden layer's channels (candidate).

.. code-block:: bash

    .venv/bin/python benchmarks/prune.py --quick
    .venv/bin/python benchmarks/prune.py --json prune.json
"""
import copy
import os
import sys
import tempfile

import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    Record,
    base_parser,
    cli,
    finish,
    inference_step,
    random_graph,
    setup,
    time_pair,
)

# Imported after common, which puts this checkout first on sys.path.
from torch_geometric.nn.models import GCN  # noqa: E402

from pyg_qgnn import deploy, prune  # noqa: E402
from pyg_qgnn.prune.sparse_checkpoint import restored_state  # noqa: E402

BENCHMARK = 'prune'
#: (metric, sparsity or removed share, values) -> smallest acceptable ratio.
GOALS = {('bytes', 0.9, 'fp32'): 8.0, ('bytes', 0.9, 'int8'): 16.0,
         ('infer', 0.5, None): 1.5}


def parse_args():
    parser = base_parser(__doc__)
    parser.add_argument('--sparsities', nargs='+', type=cli.number_in(0, 0.99),
                        default=[0.5, 0.9], metavar='S',
                        help='global sparsities of the bytes cases '
                        '(default: 0.5 0.9)')
    parser.add_argument('--bytes-features', type=cli.positive_int,
                        default=1433,
                        help='input features of the bytes model (default: '
                        '1433, as Cora)')
    parser.add_argument('--bytes-hidden', type=cli.positive_int, default=64,
                        help='hidden channels of the bytes model (default: 64)')
    parser.add_argument('--nodes', type=cli.positive_int, default=None,
                        help='nodes of the infer graph (default: 100000; '
                        '--quick: 10000)')
    parser.add_argument('--edges', type=cli.positive_int, default=None,
                        help='edges of the infer graph (default: 10 per node)')
    parser.add_argument('--features', type=cli.positive_int, default=128,
                        help='input features of the infer model (default: 128)')
    parser.add_argument('--hidden', type=cli.positive_int, default=256,
                        help='hidden channels of the infer model (default: 256)')
    parser.add_argument('--layers', type=cli.positive_int, default=3,
                        help='GCN layers of the infer model (default: 3)')
    parser.add_argument('--removed', type=cli.number_in(0, 0.99), default=0.5,
                        help='share of hidden channels removed (default: 0.5)')
    args = setup(parser.parse_args())
    if args.nodes is None:
        args.nodes = 10_000 if args.quick else 100_000
    if args.edges is None:
        args.edges = 10 * args.nodes
    if args.layers < 2:
        parser.error('argument --layers: needs at least 2 layers to have '
                     'hidden channels (got 1)')
    return args


def bytes_records(args) -> list:
    torch.manual_seed(0)
    dense = GCN(args.bytes_features, args.bytes_hidden, 2, 7)
    records = []
    with tempfile.TemporaryDirectory() as folder:
        baseline = deploy.save(dense, os.path.join(folder, 'dense.safetensors'))
        for sparsity in args.sparsities:
            model = prune.magnitude_prune(copy.deepcopy(dense), sparsity)
            for values in ('float32', 'int8'):
                path = os.path.join(folder, f'{sparsity}_{values}.safetensors')
                size = prune.save_sparse(model, path, values)
                loaded = prune.load_sparse(path, GCN(args.bytes_features,
                                                     args.bytes_hidden, 2, 7))
                expected, got = restored_state(model, values), \
                    prune.effective_state(loaded)
                if any(not torch.equal(expected[k], got[k]) for k in expected):
                    raise RuntimeError(f'the {values} checkpoint at sparsity '
                                       f'{sparsity} did not reload exactly')
                name = 'fp32' if values == 'float32' else values
                records.append(Record.cost(BENCHMARK,
                                           f'gcn_s{sparsity:g}_{name}',
                                           'bytes', baseline, size, 'B'))
    return records


def infer_record(args) -> Record:
    x, edge_index = random_graph(args.nodes, args.edges, args.features)
    torch.manual_seed(0)
    dense = GCN(args.features, args.hidden, args.layers, 32, cached=True)
    pruned = copy.deepcopy(dense)
    groups = prune.prune_channels(pruned, args.removed)
    kept = ', '.join(f'{g.name} {g.before}->{g.after}' for g in groups)
    print(f'structured pruning kept: {kept}')
    baseline, value = time_pair(inference_step(dense, x, edge_index),
                                inference_step(pruned, x, edge_index),
                                args.min_run_time)
    case = f'gcn{args.layers}_n{args.nodes}_c{args.removed:g}'
    return Record.cost(BENCHMARK, case, 'infer', baseline, value, 's')


def goal_column(record: Record) -> str:
    parts = record.case.split('_')
    if record.metric == 'bytes':
        key = ('bytes', float(parts[1][1:]), parts[2])
    else:
        key = ('infer', float(parts[2][1:]), None)
    goal = GOALS.get(key)
    if goal is None:
        return '-'
    return f'{"PASS" if record.ratio >= goal else "MISS"} (>= {goal:g})'


def main():
    args = parse_args()
    print(f'{torch.get_num_threads()} threads\n')
    records = []
    for part in tqdm(('bytes', 'infer'), desc=BENCHMARK, leave=False):
        if part == 'bytes':
            records += bytes_records(args)
        else:
            records.append(infer_record(args))
    finish(records, args, extra_columns={'goal': goal_column})


if __name__ == '__main__':
    sys.exit(cli.guard(main))
