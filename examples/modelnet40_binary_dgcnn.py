r"""Binary DGCNN on ModelNet40 (Bahri et al., CVPR 2021): the float DGCNN
against its binary variants RF (real graph features, binary edge MLPs),
BF1 and BF2 (binary graph features, XOR edge features, batch norm after or
before the max), trained by cascaded distillation (--cascade: tanh, then
binary activations, then binary weights, each stage starting from the
last) or by one stage (--stage N) from the float DGCNN, optionally with
local structure preservation (--lsp), then deployed: bit-packed weights
and activations, exact integer binary products (XOR and popcount, or int8
GEMM), Hamming-space kNN.

Data: ModelNet40 in PyG's ModelNet layout (ModelNet40/raw/<class>/train/
*.off, what torch_geometric.datasets.ModelNet downloads; points sampled on
the meshes) or the PointNet++ modelnet40_normal_resampled layout (first
--points points of each shape), from --root, else $PYG_QGNN_DATA, else
../shared/data (a 156-shape subset: enough to run the real path, too small
for a benchmark), else an announced SYNTHETIC shape set. A validation split
is carved from the training shapes (--val-fraction, --split-seed, per
class); every model is the epoch with the best validation accuracy, scored
once on the test shapes.

Columns: model and cascade stage (0: float); validation accuracy; test
overall accuracy and mean-class accuracy (mean of the per-class recalls)
of the fake-quantized model; test accuracy of the deployed model after a
round trip through its safetensors file, and whether its predictions equal
the fake-quantized ones (they must); bytes the deployed model stores; how
many times smaller than the float DGCNN. Accuracies are mean ± std over
--seeds.

The defaults are the paper's recipe (1024 points, k = 20, 250 float
epochs, 250/350/350 epochs per stage), days on a CPU; --quick is a small
model on 256 points with short schedules that runs the whole path in
minutes there (--threads 1 on a busy machine).

    python examples/modelnet40_binary_dgcnn.py --quick --variant bf1 \
        --cascade --lsp hamming --knn hamming --json bf1.json --plot bf1.png
    python examples/modelnet40_binary_dgcnn.py --variant float \
        --save dgcnn.safetensors
    python examples/modelnet40_binary_dgcnn.py --variant rf --cascade \
        --teacher dgcnn.safetensors --device cuda
"""
import json
import sys
import time

import torch
from tqdm.auto import tqdm

from pyg_qgnn import cli, deploy
from pyg_qgnn.datasets.modelnet import load_modelnet40
from pyg_qgnn.train.pointcloud import (
    PointCloudRecipe,
    aggregate_runs,
    format_point_rows,
    plot_curves,
    run_point_cloud_recipe,
)

#: --quick: a small DGCNN on few points with short schedules.
QUICK = dict(points=256, k=10, conv_channels=[32, 32, 64, 128],
             embed_channels=256, hidden_channels=[128], teacher_epochs=40,
             epochs=10, batch_size=16)
PAPER = dict(points=1024, k=20, conv_channels=[64, 64, 128, 256],
             embed_channels=1024, hidden_channels=[512, 256],
             teacher_epochs=250, epochs=None, batch_size=32)


def check_combinations(args):
    r"""Flags that only make sense for some variants."""
    if args.variant == 'float':
        for flag, given in (('--cascade', args.cascade),
                            ('--stage', args.stage is not None),
                            ('--lsp', args.lsp != 'none'),
                            ('--knn', args.knn != 'l2'),
                            ('--teacher', args.teacher is not None)):
            if given:
                raise cli.UserError(f'argument {flag}: applies to the binary '
                                    f'variants rf, bf1 and bf2, not to '
                                    f'--variant float')
    if args.lsp == 'hamming' and args.variant == 'rf':
        raise cli.UserError('argument --lsp: hamming needs binary graph '
                            'features (--variant bf1 or bf2); RF features are '
                            'real, use rbf')
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise cli.UserError('argument --device: CUDA is not available here')


def recipe_from(args) -> PointCloudRecipe:
    settings = QUICK if args.quick else PAPER
    for key, value in settings.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    stages = (1, 2, 3) if args.cascade else (int(args.stage or 3), )
    return PointCloudRecipe(
        variant=args.variant, knn='xor' if args.knn == 'hamming' else 'l2',
        lsp=args.lsp, lsp_weight=args.lsp_weight, stages=stages,
        epochs=args.epochs, teacher_epochs=args.teacher_epochs, k=args.k,
        conv_channels=tuple(args.conv_channels),
        embed_channels=args.embed_channels,
        hidden_channels=tuple(args.hidden_channels),
        batch_size=args.batch_size)


def main(args):
    if args.plot:
        cli.require_module('matplotlib', '--plot', extra='plot')
    check_combinations(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = recipe_from(args)
    with cli.user_input('--root' if args.root else '--points'):
        data = load_modelnet40(args.root, args.points)
    print(data.describe())
    teacher = None
    if args.teacher:
        with cli.user_input('--teacher'):
            teacher = deploy.load(args.teacher,
                                  recipe.float_model(data.num_classes))
    configs = recipe.stage_configs()
    epochs = (0 if teacher else recipe.teacher_epochs) + sum(
        configs[s].epochs for s in recipe.stages if recipe.binary)
    bar = tqdm(total=args.seeds * epochs, disable=args.no_progress,
               desc='epochs', unit='epoch')

    def progress(phase, epoch, metrics):
        bar.set_postfix(phase=phase, loss=f"{metrics['loss']:.3f}",
                        val=f"{metrics.get('val_acc', 0):.3f}")
        bar.update()

    start = time.perf_counter()
    runs, histories = [], []
    for seed in range(args.seeds):
        result = run_point_cloud_recipe(
            data, recipe, seed, args.val_fraction, args.split_seed,
            torch.device(args.device), args.save if seed == 0 else None,
            teacher, progress)
        runs.append(result.rows)
        histories.append(result.history)
    bar.close()
    rows = aggregate_runs(runs)
    name = data.name if not data.synthetic else \
        f'a SYNTHETIC stand-in for {data.name}'
    split = rows[0]['split']
    title = (f'DGCNN on {name}, {recipe.variant} variant, {data.num_points} '
             f'points, k = {recipe.k}: models with the best validation '
             f'accuracy ({split["train"]} train / {split["val"]} validation '
             f'shapes, split seed {args.split_seed}), scored on '
             f'{split["test"]} test shapes, seeds {list(range(args.seeds))}')
    print(f'\n{title}')
    print(format_point_rows(rows))
    print(f'\n({time.perf_counter() - start:.0f} s)')
    if not all(r['deployed_equal'] for r in rows):
        print('WARNING: the deployed predictions differ from the '
              'fake-quantized ones', file=sys.stderr)
    if args.save:
        print(f'deployed model (seed 0) written to {args.save}')
    settings = dict(knn=args.knn, lsp=args.lsp, lsp_weight=args.lsp_weight,
                    stages=list(recipe.stages), points=data.num_points,
                    k=recipe.k, quick=args.quick)
    records = [dict(r, **settings) for r in rows]
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(rows=records, runs=runs, curves=histories), f,
                      indent=2)
        print(f'rows, per-seed runs and training curves written to '
              f'{args.json}')
    if args.plot:
        plot_curves(histories[0], args.plot, f'{title} (curves of seed 0)')
        print(f'training curves written to {args.plot}')
    return records


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('--variant', default='rf',
                        type=cli.choice(['float', 'rf', 'bf1', 'bf2']),
                        help='float DGCNN only, or the binary DGCNN rf, bf1 '
                        'or bf2 distilled from it (default: rf)')
    parser.add_argument('--knn', default='l2', type=cli.choice(['l2',
                                                                'hamming']),
                        help='distance of the binary model\'s dynamic graphs '
                        'in training: l2, or hamming, the relaxation '
                        '-(X X^T - d) of Eq. 21 (meant for bf1/bf2); binary '
                        'features are always searched by exact Hamming '
                        'distance on packed bits in evaluation (default: l2)')
    parser.add_argument('--lsp', default='none',
                        type=cli.choice(['none', 'rbf', 'hamming']),
                        help='local structure preservation: none, rbf '
                        '(Gaussian kernel) or hamming (Eq. 22, bf1/bf2 only) '
                        '(default: none)')
    parser.add_argument('--lsp-weight', type=cli.positive_float,
                        default=100.0,
                        help='weight of the LSP loss (default: 100, as the '
                        'paper)')
    stage = parser.add_mutually_exclusive_group()
    stage.add_argument('--cascade', action='store_true',
                       help='cascaded distillation, stages 1, 2 and 3')
    stage.add_argument('--stage', type=cli.choice(['1', '2', '3']),
                       default=None,
                       help='one stage from the float DGCNN: 1 tanh, 2 '
                       'binary activations, 3 fully binary (default: 3)')
    parser.add_argument('--teacher', type=cli.existing_path, default=None,
                        metavar='PATH',
                        help='start from this float DGCNN (a file written by '
                        '--variant float --save PATH with the same '
                        'architecture and split) instead of training one')
    parser.add_argument('--root', type=cli.existing_dir, default=None,
                        help='folder holding ModelNet40 in either layout '
                        '(default: $PYG_QGNN_DATA, else ../shared/data, else '
                        'a SYNTHETIC stand-in)')
    parser.add_argument('--points', type=cli.positive_int, default=None,
                        help='points per shape (default: 1024; 256 with '
                        '--quick)')
    parser.add_argument('--k', type=cli.positive_int, default=None,
                        help='neighbours per point (default: 20; 10 with '
                        '--quick)')
    parser.add_argument('--conv-channels', type=cli.positive_int, nargs='+',
                        default=None, metavar='C',
                        help='widths of the edge convolutions (default: 64 64 '
                        '128 256; 32 32 64 128 with --quick)')
    parser.add_argument('--embed-channels', type=cli.positive_int,
                        default=None, metavar='C',
                        help='width of the embedding before pooling '
                        '(default: 1024; 256 with --quick)')
    parser.add_argument('--hidden-channels', type=cli.positive_int,
                        nargs='+', default=None, metavar='C',
                        help='hidden widths of the classifier (default: 512 '
                        '256; 128 with --quick)')
    parser.add_argument('--epochs', type=cli.positive_int, default=None,
                        help='epochs of each binary stage (default: the '
                        'paper\'s 250/350/350; 10 with --quick)')
    parser.add_argument('--teacher-epochs', type=cli.positive_int,
                        default=None,
                        help='epochs of the float DGCNN (default: 250; 40 '
                        'with --quick)')
    parser.add_argument('--batch-size', type=cli.positive_int, default=None,
                        help='clouds per step (default: 32; 16 with --quick)')
    parser.add_argument('--val-fraction', type=cli.number_in(0.01, 0.9),
                        default=0.2,
                        help='share of each class\'s training shapes held out '
                        'for validation (default: 0.2)')
    parser.add_argument('--split-seed', type=cli.nonnegative_int, default=0,
                        help='seed of the validation split (default: 0)')
    parser.add_argument('--seeds', type=cli.positive_int, default=1,
                        help='training repetitions, seeds 0..N-1 (default: 1)')
    parser.add_argument('--quick', action='store_true',
                        help='small model, 256 points, short schedules: the '
                        'whole path in minutes on a CPU')
    parser.add_argument('--device', type=cli.choice(['cpu', 'cuda']),
                        default='cpu',
                        help='where models train; scoring and the deployed '
                        'model run on the CPU (default: cpu)')
    parser.add_argument('--threads', type=cli.positive_int, default=None,
                        help='torch.set_num_threads (default: PyTorch\'s '
                        'choice; 1 is faster on a busy machine)')
    parser.add_argument('--save', type=cli.output_path, default=None,
                        metavar='PATH',
                        help='write the deployed model of seed 0 (packed '
                        'bits, safetensors) to PATH')
    parser.add_argument('--json', type=cli.output_path, metavar='PATH',
                        help='write the rows, per-seed runs and training '
                        'curves as JSON')
    parser.add_argument('--plot', type=cli.output_path, metavar='PATH',
                        help='write the training curves (loss, validation '
                        'accuracy per epoch and phase) as a PNG')
    parser.add_argument('--no-progress', action='store_true',
                        help='hide the progress bar')
    return parser


if __name__ == '__main__':
    sys.exit(cli.run(main, build_parser()))
