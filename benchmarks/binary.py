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

.. code-block:: bash

    .venv/bin/python benchmarks/binary.py --quick
    .venv/bin/python benchmarks/binary.py --json binary.json
    .venv/bin/python benchmarks/binary.py --metrics infer bytes
"""
import os
import sys

import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    Record,
    base_parser,
    cli,
    finish,
    setup,
    time_pair,
)

# Imported after common, which puts this checkout first on sys.path.
from pyg_qgnn.deploy import backend, convert, hamming_knn, nbytes  # noqa: E402
from pyg_qgnn.nn.models import DGCNN, BinaryDGCNN  # noqa: E402
from pyg_qgnn.quantizers.binary import pack_signs  # noqa: E402

BENCHMARK = 'binary'
METRICS = ('knn', 'infer', 'bytes')

#: Feature width d -> smallest acceptable ratio float time / Hamming time.
KNN_GOALS = {64: 5.0, 256: 8.0}
#: Smallest acceptable ratios of the DGCNN cases: float / deployed time and
#: float / deployed bytes.
MODEL_GOALS = {'infer': 2.0, 'bytes': 15.0}


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
    args = setup(parser.parse_args())
    if args.clouds is None:
        args.clouds = 4 if args.quick else 16
    if args.points is None:
        args.points = 256 if args.quick else 1024
    return args


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


def goal_column(record: Record) -> str:
    if record.metric == 'knn':
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
          f'{found.hamming_knn}, binary matmul: {found.binary_matmul}\n')
    records = []
    if 'knn' in args.metrics:
        records += [knn_record(args.clouds, args.points, dims, args.k,
                               args.min_run_time)
                    for dims in tqdm(args.dims, desc=BENCHMARK, leave=False)]
    if 'infer' in args.metrics:
        records.append(infer_record(args.clouds, args.points, args.k,
                                    args.min_run_time))
    if 'bytes' in args.metrics:
        records += bytes_records()
    finish(records, args, extra_columns={'goal': goal_column})


if __name__ == '__main__':
    sys.exit(cli.guard(main))
