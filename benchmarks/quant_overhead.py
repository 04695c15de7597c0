r"""Training-step overhead of fake quantization: :class:`QuantGCNConv` at
INT8 (:obj:`quantize_model(GCNConv(F, F), QAT(8, observer=...))`) against
the plain :class:`torch_geometric.nn.GCNConv`, one case per range observer.

A step is ``zero_grad``, forward and backward of the output sum, in training
mode, so every activation quantizer observes its input on every step.

Two more cases time the graph-aware schemes against QAT at INT4 on the same
graph (the baseline is then the QAT step): :obj:`gcn_dq_int4`
(:obj:`DegreeQuant(4)`: a protective mask drawn per step) and
:obj:`gcn_a2q` (:obj:`A2Q()`: a learned step and bit width per node).

.. code-block:: bash

    .venv/bin/python benchmarks/quant_overhead.py --quick
    .venv/bin/python benchmarks/quant_overhead.py --json quant_overhead.json
"""
import os
import sys

import torch
from torch_geometric.nn import GCNConv
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    cli,
    Record,
    base_parser,
    finish,
    random_graph,
    setup,
    time_pair,
    train_step,
)

# Imported after common, which puts this checkout first on sys.path.
from pyg_qgnn import A2Q, QAT, DegreeQuant, quantize_model  # noqa: E402

BENCHMARK = 'quant_overhead'

#: Observer -> smallest acceptable ratio (float step time / quantized step
#: time). Percentiles cost a sort, so "per" is allowed more overhead.
GOALS = {'abs': 0.67, 'mom': 0.67, 'per': 0.5}

#: Scheme cases, timed against QAT INT4: name -> (scheme, smallest acceptable
#: ratio QAT time / scheme time, or None to report only).
SCHEMES = {
    'dq': ('gcn_dq_int4', lambda: DegreeQuant(4), 0.5),
    'a2q': ('gcn_a2q', lambda: A2Q(), None),
}


def parse_args():
    parser = base_parser(__doc__)
    parser.add_argument(
        '--nodes', type=cli.positive_int, default=None,
        help='nodes of the random graph (default: 10000 with --quick, '
        '100000 otherwise)')
    parser.add_argument(
        '--edges', type=cli.positive_int, default=None,
        help='edges of the random graph (default: 100000 with --quick, '
        '1000000 otherwise)')
    parser.add_argument(
        '--features', type=cli.positive_int, default=128,
        help='input and output channels of the layers (default: 128)')
    parser.add_argument(
        '--observers', nargs='+', choices=sorted(GOALS), default=list(GOALS),
        help='activation range observers to compare (default: all)')
    parser.add_argument(
        '--schemes', nargs='*', choices=sorted(SCHEMES), default=list(SCHEMES),
        help='graph-aware schemes to time against QAT INT4 (default: all; '
        'none if given without names)')
    args = setup(parser.parse_args())
    if args.nodes is None:
        args.nodes = 10_000 if args.quick else 100_000
    if args.edges is None:
        args.edges = 100_000 if args.quick else 1_000_000
    return args


def goal_column(record: Record) -> str:
    goals = {case: goal for case, _, goal in SCHEMES.values()}
    goal = goals.get(record.case, GOALS.get(record.case.rsplit('_', 1)[-1]))
    if goal is None:
        return '-'
    return f'{"PASS" if record.ratio >= goal else "MISS"} (>= {goal})'


def main():
    args = parse_args()
    x, edge_index = random_graph(args.nodes, args.edges, args.features)
    torch.manual_seed(0)
    float_layer = GCNConv(args.features, args.features)
    print(f'GCNConv({args.features}, {args.features}), {args.nodes} nodes, '
          f'{args.edges} edges, {torch.get_num_threads()} threads\n')

    records = []
    for observer in tqdm(args.observers, desc=BENCHMARK, leave=False):
        quant_layer = quantize_model(float_layer, QAT(8, observer=observer))
        # The baseline is timed anew next to each candidate, so that every
        # ratio compares two measurements taken under the same load.
        baseline, value = time_pair(train_step(float_layer, x, edge_index),
                                    train_step(quant_layer, x, edge_index),
                                    args.min_run_time)
        records.append(Record.cost(BENCHMARK, f'gcn_int8_{observer}',
                                   'train_step', baseline, value, 's'))
    qat_layer = quantize_model(float_layer, QAT(4))
    for name in tqdm(args.schemes, desc=BENCHMARK, leave=False):
        case, scheme, _ = SCHEMES[name]
        quant_layer = quantize_model(float_layer, scheme())
        baseline, value = time_pair(train_step(qat_layer, x, edge_index),
                                    train_step(quant_layer, x, edge_index),
                                    args.min_run_time)
        records.append(Record.cost(BENCHMARK, case, 'train_step', baseline,
                                   value, 's'))
    finish(records, args, extra_columns={'goal': goal_column})


if __name__ == '__main__':
    sys.exit(cli.guard(main))
