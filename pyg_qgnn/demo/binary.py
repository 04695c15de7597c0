r"""Demo section ``binary``: a small float DGCNN on ModelNet40 point clouds
(the shared 156-shape subset, else a SYNTHETIC shape set), then a binary
DGCNN distilled from it in one stage (binary weights and activations),
deployed with packed bits and popcounts, saved and loaded back; and the
dynamic kNN graph in Hamming space against the float kNN DGCNN users run.

Columns of the model table: model and stage (0: float); test accuracy and
mean-class accuracy (mean of per-class recalls) of the epoch with the best
validation accuracy; test accuracy of the deployed model loaded back from
its safetensors file and whether its predictions equal the fake-quantized
ones; bytes it stores; how many times smaller than float (this small
model, whose real last layer weighs most, and the paper-size DGCNN). The
kNN table: milliseconds of torch.cdist + topk on +-1 features against
pyg_qgnn.deploy.hamming_knn on their packed codes, and the speed-up.
"""
import statistics
import time
from typing import List

import torch
from tqdm.auto import tqdm

from pyg_qgnn import cli, deploy
from pyg_qgnn.datasets.modelnet import load_modelnet40
from pyg_qgnn.nn.models import DGCNN, BinaryDGCNN
from pyg_qgnn.quantizers.binary import pack_signs
from pyg_qgnn.train.pointcloud import (
    PointCloudRecipe,
    aggregate_runs,
    format_point_rows,
    plot_curves,
    run_point_cloud_recipe,
)
from pyg_qgnn.train.results import markdown_table

#: About 45 seconds on 2 CPU cores: a small DGCNN on 128 points, with a
#: float learning rate for a short schedule.
SMALL = dict(k=10, conv_channels=(16, 16, 32), embed_channels=64,
             hidden_channels=(32, ), batch_size=16, teacher_lr=1e-2)
#: The kNN case: clouds x points, feature width, neighbours.
KNN_CASE = dict(clouds=8, points=1024, dims=64, k=20)


def knn_timing(clouds: int = 8, points: int = 1024, dims: int = 64,
               k: int = 20, repeats: int = 5) -> dict:
    r"""Median seconds of the float kNN graph (:obj:`torch.cdist` and
    :obj:`topk` on dense :math:`\pm 1` features) and of
    :func:`pyg_qgnn.deploy.hamming_knn` on the same features packed, each
    point among its own neighbours, after one untimed call each."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (clouds, points, dims), generator=gen) * 2.0 - 1
    batch = torch.arange(clouds).repeat_interleave(points)
    codes = pack_signs(x.reshape(-1, dims))
    calls = dict(
        float=lambda: torch.cdist(x, x).topk(k, -1, largest=False),
        hamming=lambda: deploy.hamming_knn(codes, k, batch, num_bits=dims,
                                           loop=True))
    times = {name: [] for name in calls}
    for name, call in calls.items():
        call()
    for _ in range(repeats):  # alternate, so load changes fall on both
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def run(args) -> List[dict]:
    with cli.user_input('--binary-root' if args.binary_root else None):
        data = load_modelnet40(args.binary_root, args.binary_points)
    print(f'[pyg_qgnn] {data.describe()}')
    recipe = PointCloudRecipe(
        variant=args.binary_variant, knn='xor' if args.binary_variant != 'rf'
        else 'l2', stages=(3, ), epochs=args.binary_epochs,
        teacher_epochs=args.binary_epochs, **SMALL)
    seeds = min(args.seeds, args.binary_seeds)
    runs = []
    threads = torch.get_num_threads()
    # The ops of a model this small gain nothing from intra-op threads, and
    # on a busy machine their synchronisation costs many times the work.
    torch.set_num_threads(1)
    try:
        with tqdm(total=2 * seeds * args.binary_epochs, desc='binary epochs',
                  disable=args.no_progress) as bar:
            for seed in range(seeds):
                result = run_point_cloud_recipe(
                    data, recipe, seed, callback=lambda *_: bar.update())
                runs.append(result.rows)
    finally:
        torch.set_num_threads(threads)
    rows = aggregate_runs(runs)
    name = f'a SYNTHETIC stand-in for {data.name}' if data.synthetic else \
        f'{data.name} ({len(data.train) + len(data.test)} shapes)'
    split = rows[0]['split']
    print(f'\nSmall DGCNN ({data.num_points} points, k = {recipe.k}) on '
          f'{name}: {split["train"]} train / {split["val"]} validation / '
          f'{split["test"]} test shapes, {seeds} seed(s)')
    print(format_point_rows(rows))
    float_size = deploy.nbytes(DGCNN())
    binary_size = deploy.nbytes(deploy.convert(BinaryDGCNN(
        args.binary_variant).eval()))
    print(f'Paper-size DGCNN: float {float_size:,} bytes, deployed '
          f'{args.binary_variant.upper()} {binary_size:,} bytes '
          f'({float_size / binary_size:.1f}x smaller)')

    timing = knn_timing(**KNN_CASE)
    case = (f'{KNN_CASE["clouds"]} clouds x {KNN_CASE["points"]} points, '
            f'd = {KNN_CASE["dims"]}, k = {KNN_CASE["k"]}')
    print(f'\nDynamic kNN graph on +-1 features ({case}), backend '
          f'{deploy.backend().hamming_knn}')
    print(markdown_table(
        ['kNN', 'float cdist + topk (ms)', 'Hamming, packed (ms)',
         'speed-up'],
        [[case, f"{1e3 * timing['float']:.1f}",
          f"{1e3 * timing['hamming']:.1f}",
          f"{timing['float'] / timing['hamming']:.1f}x"]]))
    plot = args.plot_path('binary')
    if plot:
        plot_curves(result.history, plot, f'Small DGCNN on {name} (seed '
                    f'{seeds - 1})')
        print(f'plot written to {plot}')
    common = dict(section='binary', dataset=data.name, source=data.kind)
    records = [dict(row, **common) for row in rows]
    records.append(dict(common, model=f'paper-size DGCNN '
                        f'{args.binary_variant}', float_bytes=float_size,
                        bytes=binary_size))
    records.append(dict(common, model='kNN', case=case,
                        float_seconds=timing['float'],
                        hamming_seconds=timing['hamming'],
                        backend=deploy.backend().hamming_knn))
    return records


def add_arguments(parser):
    parser.add_argument('--binary-root', default=None, type=cli.existing_dir,
                        metavar='ROOT',
                        help='binary: folder holding ModelNet40 (PyG or '
                        'modelnet40_normal_resampled layout) (default: '
                        '$PYG_QGNN_DATA, else ../shared/data, else a '
                        'SYNTHETIC stand-in)')
    parser.add_argument('--binary-variant', default='bf1', metavar='VARIANT',
                        type=cli.choice(['rf', 'bf1', 'bf2']),
                        help='binary: rf, bf1 or bf2 (default: bf1)')
    parser.add_argument('--binary-points', type=cli.positive_int,
                        default=128, metavar='N',
                        help='binary: points per shape (default: 128)')
    parser.add_argument('--binary-epochs', type=cli.positive_int, default=10,
                        metavar='N',
                        help='binary: epochs of the float and of the binary '
                        'model (default: 10)')
    parser.add_argument('--binary-seeds', type=cli.positive_int, default=1,
                        metavar='N',
                        help='binary: at most this many of --seeds '
                        '(default: 1)')
