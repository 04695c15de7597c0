r"""Integer deployment: deployed INT8 / INT4 GNNs against the float models
they come from, in inference time and in file size.

Every model is a 2-layer GCN, GIN or GraphSAGE of
:mod:`torch_geometric.nn.models` (:obj:`--features` inputs,
:obj:`--hidden` hidden and output channels), quantized with
:obj:`QAT(bits)`, calibrated by one training-mode forward pass over the
graph, put in evaluation mode and deployed by
:func:`pyg_qgnn.deploy.convert` (:obj:`int8` codes, :obj:`int8` GEMMs,
:obj:`int8` gather aggregation). The float model (baseline) has the same
shape and weights.

Metric :obj:`infer`, cases :obj:`{model}_int{bits}_{nodes}_{edges}_{features}`:
one full-graph forward pass (evaluation, :func:`torch.inference_mode`) of
the deployed model (value) against the float32 model (baseline) on a
random graph. Cases ending in :obj:`_bf16` time the float model under
:obj:`torch.autocast('cpu', dtype=torch.bfloat16)` as the baseline
instead. Both sides get the same adjacency, the fastest input both
accept: a :obj:`torch_sparse.SparseTensor` :obj:`adj_t` where
:obj:`torch_sparse` is installed, else a :obj:`torch.sparse` CSR tensor.
GCN runs with :obj:`cached=True` on both sides: its normalization is the
same float work for both, and PyG users cache it on a fixed graph, so the
cases time the layers rather than the preprocessing. Before timing, the
run stops unless the deployed model predicts the class of the
fake-quantized model it comes from for at least 99.9% of the nodes (not
all: it sums in another order, so a value on a rounding boundary can take
the neighbouring code, and an untrained model on random features has
near-tied classes). Goals: INT8 at least 1.5 times faster than float32,
and not slower than bfloat16.

Metric :obj:`bytes`, cases
:obj:`{model}_int{bits}_{features}_{hidden}_{hidden}` (channels of the
input, hidden and output features): the size of the
:func:`pyg_qgnn.deploy.save` file of the deployed model (value) against
that of the float model (baseline). The codes shrink the weights 4 times
(INT8) or 8 times (INT4); what stays float32 (biases, quantizer ranges,
one weight step per output channel) keeps the ratios below that, the
more so the fewer the channels; it is counted, and the goals (INT8 at
least 3.5 times smaller, INT4 at least 6 times) apply to the default
128-channel model. :obj:`--hidden` sets a larger one.

.. code-block:: bash

    .venv/bin/python benchmarks/integer.py --quick
    .venv/bin/python benchmarks/integer.py --json integer.json
    .venv/bin/python benchmarks/integer.py --models gcn --metrics bytes
"""
import os
import sys
import tempfile
import warnings
from typing import List, Tuple

import torch
from torch import Tensor, nn
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    Record,
    add_random_graph_arguments,
    base_parser,
    cli,
    count_name,
    deployed_infer_records,
    finish,
    graph_adjacency,
    random_graph,
    random_graph_sizes,
    setup,
)

# Imported after common, which puts this checkout first on sys.path.
from torch_geometric.nn.models import GCN, GIN, GraphSAGE  # noqa: E402
from torch_geometric.typing import WITH_TORCH_SPARSE  # noqa: E402

from pyg_qgnn import QAT, deploy, quantize_model  # noqa: E402

BENCHMARK = 'integer'
METRICS = ('infer', 'bytes')
#: Model name -> :obj:`(features, hidden) -> 2-layer float model`.
MODELS = {
    'gcn': lambda features, hidden: GCN(features, hidden, 2, hidden,
                                        cached=True),
    'gin': lambda features, hidden: GIN(features, hidden, 2, hidden),
    'sage': lambda features, hidden: GraphSAGE(features, hidden, 2, hidden),
}
#: (model, bits) deployed, in the order of the table; INT4 for GCN only.
VARIANTS = (('gcn', 8), ('gin', 8), ('sage', 8), ('gcn', 4))
#: (metric, bits, baseline) -> smallest acceptable ratio.
GOALS = {('infer', 8, 'fp32'): 1.5, ('infer', 8, 'bf16'): 1.0,
         ('bytes', 8, None): 3.5, ('bytes', 4, None): 6.0}
#: Share of nodes whose predicted class the deployed model must share with
#: the fake-quantized one (why not 1: see the module docstring).
MIN_AGREEMENT = 0.999


def parse_args():
    parser = base_parser(__doc__)
    add_random_graph_arguments(parser, 'every model', 128)
    parser.add_argument(
        '--models', nargs='+', type=cli.choice(list(MODELS)),
        default=list(MODELS), metavar='MODEL',
        help=f'models to deploy, among {", ".join(MODELS)}; gcn also runs '
        f'at INT4 (default: all)')
    parser.add_argument(
        '--metrics', nargs='+', type=cli.choice(list(METRICS)),
        default=list(METRICS), metavar='METRIC',
        help=f'what to measure, among {", ".join(METRICS)} (default: all)')
    return random_graph_sizes(setup(parser.parse_args()))


def deployed_pair(name: str, bits: int, x: Tensor, adj,
                  args) -> Tuple[nn.Module, nn.Module]:
    r"""The float model and its deployed :obj:`QAT(bits)` form, checked to
    predict the classes of the fake-quantized model."""
    torch.manual_seed(0)
    float_model = MODELS[name](args.features, args.hidden).eval()
    quantized = quantize_model(float_model, QAT(bits=bits))
    with torch.no_grad():  # calibration: the observers see the graph once
        quantized.train()(x, adj)
    quantized.eval()
    with torch.inference_mode():
        expected = quantized(x, adj).argmax(-1)
    # In place: a copy would fail on a cached torch.sparse normalization.
    deployed = deploy.convert(quantized, inplace=True)
    with torch.inference_mode():
        agreement = (deployed(x, adj).argmax(-1) == expected).float().mean()
    if agreement < MIN_AGREEMENT:
        raise RuntimeError(f'the deployed INT{bits} {name} predicts the '
                           f'classes of the fake-quantized model for only '
                           f'{float(agreement):.2%} of the nodes (expected '
                           f'at least {MIN_AGREEMENT:.1%})')
    tqdm.write(f'{name} INT{bits}: deployed and fake-quantized predictions '
               f'agree on {float(agreement):.2%} of the nodes')
    return float_model, deployed


def infer_records(name: str, bits: int, float_model: nn.Module,
                  deployed: nn.Module, x: Tensor, adj, args) -> List[Record]:
    case = (f'{name}_int{bits}_{count_name(args.nodes)}_'
            f'{count_name(args.edges)}_{args.features}')
    return deployed_infer_records(BENCHMARK, case, float_model, deployed, x,
                                  adj, args.min_run_time, bf16=bits == 8)


def bytes_record(name: str, bits: int, float_model: nn.Module,
                 deployed: nn.Module, folder: str, args) -> Record:
    case = f'{name}_int{bits}_{args.features}_{args.hidden}_{args.hidden}'
    baseline = deploy.save(float_model, os.path.join(folder, 'float'))
    value = deploy.save(deployed, os.path.join(folder, case))
    return Record.cost(BENCHMARK, case, 'bytes', baseline, value, 'B')


def goal_column(record: Record) -> str:
    bits = int(record.case.split('_int')[1].split('_')[0])
    baseline = None
    if record.metric == 'infer':
        baseline = 'bf16' if record.case.endswith('_bf16') else 'fp32'
    goal = GOALS.get((record.metric, bits, baseline))
    if goal is None:
        return '-'
    return f'{"PASS" if record.ratio >= goal else "MISS"} (>= {goal:g})'


def main():
    args = parse_args()
    # torch's notes that sparse CSR is in beta, raised inside PyG's spmm.
    warnings.filterwarnings('ignore', message='Sparse CSR tensor support')
    warnings.filterwarnings('ignore', message='Sparse invariant checks')
    x, edge_index = random_graph(args.nodes, args.edges, args.features)
    adj = graph_adjacency(edge_index, args.nodes)
    found = deploy.backend()
    print(f'{args.nodes} nodes, {args.edges} edges, {args.features} features, '
          f'{args.hidden} hidden; adjacency: '
          f'{"SparseTensor" if WITH_TORCH_SPARSE else "torch.sparse CSR"}; '
          f'{torch.get_num_threads()} threads; int8 GEMM: {found.int8_gemm}, '
          f'int8 aggregation: {found.int8_aggregate}\n')
    variants = [(name, bits) for name, bits in VARIANTS
                if name in args.models]
    infer, sizes = [], []
    with tempfile.TemporaryDirectory() as folder:
        for name, bits in tqdm(variants, desc=BENCHMARK, leave=False):
            float_model, deployed = deployed_pair(name, bits, x, adj, args)
            if 'infer' in args.metrics:
                infer += infer_records(name, bits, float_model, deployed, x,
                                       adj, args)
            if 'bytes' in args.metrics:
                sizes.append(bytes_record(name, bits, float_model, deployed,
                                          folder, args))
    print()
    finish(infer + sizes, args, extra_columns={'goal': goal_column})


if __name__ == '__main__':
    sys.exit(cli.guard(main))
