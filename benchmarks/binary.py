r"""Binary GNNs for point clouds (Bahri et al., 2021): the dynamic kNN graph
in Hamming space against the float kNN that DGCNN users run, and the
deployed binary DGCNN against the float DGCNN in time and size.

Metric :obj:`knn`, one case per feature width :obj:`d`
(:obj:`b{clouds}_n{points}_d{d}_k{k}`): :func:`pyg_qgnn.deploy.hamming_knn`
on packed :math:`\pm 1` codes (each point among its own :math:`k`
neighbours, as in DGCNN; the codes are packed before timing) against
:obj:`torch.cdist(x, x).topk(k)` on the same :math:`\pm 1` features as a
dense :obj:`(clouds, points, d)` float tensor (baseline). Both graphs are
checked to agree (same neighbour distances) before timing.

Metric :obj:`infer`, case :obj:`dgcnn_rf_b{clouds}_n{points}`: one forward
pass (evaluation, :func:`torch.inference_mode`) of the paper-size RF binary
DGCNN in its deployed form (:func:`pyg_qgnn.deploy.convert`: packed
weights, integer binary products) against the float DGCNN of the same
shape (baseline), on random clouds, :math:`k` neighbours; the deployed
and the fake-quantized model are checked to predict the same classes
first.

Metric :obj:`bytes`, cases :obj:`dgcnn_rf`, :obj:`dgcnn_bf1` and
:obj:`dgcnn_bf2`: what the deployed paper-size binary DGCNN stores
(:func:`pyg_qgnn.deploy.nbytes`: packed bits, plus the batch norms,
rescalings and real last layer it keeps in float) against the float
DGCNN.

BinSAGE (the binary GraphSAGE of the same paper, section 4.3): a 3-layer
:class:`~pyg_qgnn.nn.BinGraphSAGE` (:obj:`--hidden` channels, mean
aggregation, 47 classes as ogbn-products) deployed by
:func:`pyg_qgnn.deploy.convert` (packed 1-bit weights, :math:`\pm 1`
features aggregated as integers, binary products) against PyG's float
:class:`~torch_geometric.nn.models.GraphSAGE` of the same shape, on a
random graph of :obj:`--nodes` nodes, :obj:`--edges` edges and
:obj:`--features` features. Both get the same adjacency: a
:obj:`torch_sparse.SparseTensor` where :obj:`torch_sparse` is installed,
else a :obj:`torch.sparse` CSR tensor. Metric :obj:`infer`, case
:obj:`binsage_{nodes}_{edges}_{features}`: one full-graph forward pass
(evaluation, :func:`torch.inference_mode`) of the deployed model (value)
against the float32 model (baseline), after checking that the deployed
and the fake-quantized model predict the same class for every node (goal:
at least 2 times faster); case :obj:`..._bf16`: the float model under
:obj:`torch.autocast('cpu', dtype=torch.bfloat16)` as the baseline
(skipped, with the reason printed, where the adjacency has no bfloat16
CPU kernel; goal: not slower). Metric :obj:`bytes`, case :obj:`binsage`:
the :func:`pyg_qgnn.deploy.save` file of the deployed model against that
of the float model (goal: at least 20 times smaller; the paper: 7.2 MB
against 341 KB on ogbn-products). :obj:`--models` picks DGCNN, BinSAGE or
both for these two metrics.

.. code-block:: bash

    .venv/bin/python benchmarks/binary.py --quick
    .venv/bin/python benchmarks/binary.py --json binary.json
    .venv/bin/python benchmarks/binary.py --metrics infer bytes
    .venv/bin/python benchmarks/binary.py --metrics infer bytes \
        --models binsage
"""
import os
import sys
import tempfile
import warnings
from typing import List

import torch
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
    time_pair,
)

# Imported after common, which puts this checkout first on sys.path.
from torch_geometric.nn.models import GraphSAGE  # noqa: E402
from torch_geometric.typing import WITH_TORCH_SPARSE  # noqa: E402

from pyg_qgnn.deploy import (  # noqa: E402
    backend,
    convert,
    hamming_knn,
    nbytes,
    save,
)
from pyg_qgnn.nn.models import DGCNN, BinaryDGCNN, BinGraphSAGE  # noqa: E402
from pyg_qgnn.quantizers.binary import pack_signs  # noqa: E402

BENCHMARK = 'binary'
METRICS = ('knn', 'infer', 'bytes')
#: The models of the infer and bytes metrics.
MODELS = ('dgcnn', 'binsage')
#: Classes of the BinSAGE cases, as ogbn-products.
SAGE_CLASSES = 47

#: Feature width d -> smallest acceptable ratio float time / Hamming time.
KNN_GOALS = {64: 5.0, 256: 8.0}
#: Smallest acceptable ratios of the DGCNN cases: float / deployed time and
#: float / deployed bytes.
MODEL_GOALS = {'infer': 2.0, 'bytes': 15.0}
#: The same for the BinSAGE cases (keyed by metric, and baseline for infer).
SAGE_GOALS = {('infer', 'fp32'): 2.0, ('infer', 'bf16'): 1.0,
              ('bytes', None): 20.0}


def parse_args():
    parser = base_parser(__doc__)
    parser.add_argument(
        '--clouds', type=cli.positive_int, default=None,
        help='point clouds per batch (default: 4 with --quick, 16 otherwise)')
    parser.add_argument(
        '--points', type=cli.positive_int, default=None,
        help='points per cloud (default: 256 with --quick, 1024 otherwise)')
    parser.add_argument(
        '--dims', type=cli.positive_int, nargs='+', default=[64, 256],
        metavar='D', help='binary feature widths, one case each '
        '(default: 64 256)')
    parser.add_argument(
        '--k', type=cli.positive_int, default=20,
        help='neighbours per point, itself included, in the kNN cases and '
        'the DGCNN layers (default: 20)')
    parser.add_argument(
        '--metrics', nargs='+', type=cli.choice(list(METRICS)),
        default=list(METRICS), metavar='METRIC',
        help=f'what to measure, among {", ".join(METRICS)} (default: all)')
    parser.add_argument(
        '--models', nargs='+', type=cli.choice(list(MODELS)),
        default=list(MODELS), metavar='MODEL',
        help=f'models of the infer and bytes metrics, among '
        f'{", ".join(MODELS)} (default: all)')
    add_random_graph_arguments(parser, 'the 3-layer BinSAGE models', 256)
    args = setup(parser.parse_args())
    if args.clouds is None:
        args.clouds = 4 if args.quick else 16
    if args.points is None:
        args.points = 256 if args.quick else 1024
    return random_graph_sizes(args)


def knn_record(clouds: int, points: int, dims: int, k: int,
               min_run_time: float) -> Record:
    r"""Times the float and the Hamming kNN graph of one batch of random
    :math:`\pm 1` clouds."""
    generator = torch.Generator().manual_seed(dims)
    x = torch.randint(0, 2, (clouds, points, dims),
                      generator=generator) * 2.0 - 1
    batch = torch.arange(clouds).repeat_interleave(points)
    codes = pack_signs(x.reshape(-1, dims))
    k = min(k, points)

    def float_knn():
        return torch.cdist(x, x).topk(k, dim=-1, largest=False).indices

    def binary_knn():
        return hamming_knn(codes, k, batch, num_bits=dims, loop=True)

    _check_agree(x, float_knn(), binary_knn(), k)
    baseline, value = time_pair(float_knn, binary_knn, min_run_time)
    case = f'b{clouds}_n{points}_d{dims}_k{k}'
    return Record.cost(BENCHMARK, case, 'knn', baseline, value, 's')


def _check_agree(x, nearest, edge_index, k):
    r"""Ties may pick other neighbours, but never at other distances."""
    flat = x.reshape(-1, x.size(-1))
    offset = (torch.arange(x.size(0)) * x.size(1)).view(-1, 1, 1)
    centres = torch.arange(flat.size(0)).view(-1, 1)
    reference = (flat[(nearest + offset).view(-1, k)] != flat[centres]).sum(-1)
    found = (flat[edge_index[0]] != flat[edge_index[1]]).sum(-1).view(-1, k)
    if not torch.equal(reference.sort(-1).values, found.sort(-1).values):
        raise RuntimeError('the Hamming and the float kNN graphs disagree')


def infer_record(clouds: int, points: int, k: int,
                 min_run_time: float) -> Record:
    r"""Times a forward pass of the float DGCNN and of the deployed RF
    binary DGCNN of the same shape on one batch of random clouds."""
    generator = torch.Generator().manual_seed(0)
    pos = torch.randn(clouds * points, 3, generator=generator)
    batch = torch.arange(clouds).repeat_interleave(points)
    k = min(k, points)
    torch.manual_seed(0)
    float_model = DGCNN(k=k).eval()
    binary = BinaryDGCNN('rf', k=k).eval()
    deployed = convert(binary)
    with torch.inference_mode():
        if not torch.equal(binary(pos, batch).argmax(-1),
                           deployed(pos, batch).argmax(-1)):
            raise RuntimeError('the deployed and the fake-quantized binary '
                               'DGCNN predict different classes')

    def forward(model):
        def call():
            with torch.inference_mode():
                return model(pos, batch)
        return call

    baseline, value = time_pair(forward(float_model), forward(deployed),
                                min_run_time)
    return Record.cost(BENCHMARK, f'dgcnn_rf_b{clouds}_n{points}', 'infer',
                       baseline, value, 's')


def bytes_records() -> list:
    r"""Stored bytes of the deployed paper-size binary DGCNNs against the
    float DGCNN."""
    float_bytes = nbytes(DGCNN())
    return [Record.cost(BENCHMARK, f'dgcnn_{variant}', 'bytes', float_bytes,
                        nbytes(convert(BinaryDGCNN(variant).eval())),
                        'bytes')
            for variant in ('rf', 'bf1', 'bf2')]


def sage_pair(args, x, adj):
    r"""The float GraphSAGE and the deployed BinGraphSAGE of the same shape,
    checked to predict the classes of the fake-quantized model."""
    torch.manual_seed(0)
    shape = dict(in_channels=args.features, hidden_channels=args.hidden,
                 num_layers=3, out_channels=SAGE_CLASSES)
    float_model = GraphSAGE(**shape, aggr='mean').eval()
    binary = BinGraphSAGE(**shape, aggr='mean').eval()
    deployed = convert(binary)
    with torch.inference_mode():
        same = (binary(x, adj).argmax(-1) == deployed(x, adj).argmax(-1))
    if not bool(same.all()):
        raise RuntimeError(f'the deployed and the fake-quantized BinGraphSAGE '
                           f'predict different classes for '
                           f'{int((~same).sum())} of {same.numel()} nodes')
    return float_model, deployed


def sage_infer_records(float_model, deployed, x, adj, args) -> List[Record]:
    r"""Full-graph inference of the deployed BinGraphSAGE against the float
    GraphSAGE in float32 and, where it runs, under bfloat16 autocast."""
    case = (f'binsage_{count_name(args.nodes)}_{count_name(args.edges)}_'
            f'{args.features}')
    return deployed_infer_records(BENCHMARK, case, float_model, deployed, x,
                                  adj, args.min_run_time)


def sage_bytes_record(float_model, deployed) -> Record:
    r"""Bytes of the :func:`pyg_qgnn.deploy.save` files."""
    with tempfile.TemporaryDirectory() as folder:
        baseline = save(float_model, os.path.join(folder, 'float'))
        value = save(deployed, os.path.join(folder, 'binary'))
    return Record.cost(BENCHMARK, 'binsage', 'bytes', baseline, value,
                       'bytes')


def sage_records(args) -> List[Record]:
    # torch's notes that sparse CSR is in beta, raised inside PyG's spmm.
    warnings.filterwarnings('ignore', message='Sparse CSR tensor support')
    warnings.filterwarnings('ignore', message='Sparse invariant checks')
    x, edge_index = random_graph(args.nodes, args.edges, args.features)
    adj = graph_adjacency(edge_index, args.nodes)
    float_model, deployed = sage_pair(args, x, adj)
    records = []
    if 'infer' in args.metrics:
        records += sage_infer_records(float_model, deployed, x, adj, args)
    if 'bytes' in args.metrics:
        records.append(sage_bytes_record(float_model, deployed))
    return records


def goal_column(record: Record) -> str:
    if record.case.startswith('binsage'):
        baseline = None
        if record.metric == 'infer':
            baseline = 'bf16' if record.case.endswith('_bf16') else 'fp32'
        goal = SAGE_GOALS[(record.metric, baseline)]
    elif record.metric == 'knn':
        dims = int(record.case.split('_d')[1].split('_')[0])
        goal = KNN_GOALS.get(dims)
    else:
        goal = MODEL_GOALS[record.metric]
    if goal is None:
        return '-'
    return f'{"PASS" if record.ratio >= goal else "MISS"} (>= {goal:g})'


def main():
    args = parse_args()
    found = backend()
    print(f'{args.clouds} clouds x {args.points} points, k = {args.k}, '
          f'{torch.get_num_threads()} threads; Hamming kNN path: '
          f'{found.hamming_knn}, binary matmul: {found.binary_matmul}')
    if 'binsage' in args.models:
        print(f'BinSAGE: {args.nodes} nodes, {args.edges} edges, '
              f'{args.features} features, {args.hidden} hidden; adjacency: '
              f'{"SparseTensor" if WITH_TORCH_SPARSE else "torch.sparse CSR"}'
              f'; int8 aggregation: {found.int8_aggregate}')
    print()
    records = []
    if 'knn' in args.metrics:
        records += [knn_record(args.clouds, args.points, dims, args.k,
                               args.min_run_time)
                    for dims in tqdm(args.dims, desc=BENCHMARK, leave=False)]
    dgcnn = 'dgcnn' in args.models
    if 'infer' in args.metrics and dgcnn:
        records.append(infer_record(args.clouds, args.points, args.k,
                                    args.min_run_time))
    if 'bytes' in args.metrics and dgcnn:
        records += bytes_records()
    if {'infer', 'bytes'} & set(args.metrics) and 'binsage' in args.models:
        records += sage_records(args)
    finish(records, args, extra_columns={'goal': goal_column})


if __name__ == '__main__':
    sys.exit(cli.guard(main))
