r"""2-bit graph recommendation with GNAQ (node-aware dynamic quantization,
Li et al., CIKM 2025) against the float LightGCN it starts from and a plain
per-node uniform 2-bit baseline trained with LSQ.

A float LightGCN is trained on the training interactions (or loaded with
--pretrained), selected on validation Recall@20; each quantized method then
fine-tunes a copy of it, also selected on validation. Every model is scored
once on the test interactions: all items ranked for each user, the user's
training (and validation) items left out.

Columns: method, bits and embedding dimension d; test Recall@10/20 and
NDCG@10/20 (mean ± std over seeds when --seeds > 1); validation Recall@20;
bytes of the stored embedding table (float32; GNAQ: packed codes plus 2^b
FP8 levels per node; LSQ: packed codes plus a float32 step per node); how
many times smaller than the float table; seconds of training steps.

Examples:

    python examples/recsys_gnaq.py --quick                 # minutes on a CPU
    python examples/recsys_gnaq.py --dim 64 --ablations --json rows.json
"""
import json
import sys
import time
from dataclasses import asdict

import torch
from tqdm.auto import tqdm

from pyg_qgnn import cli
from pyg_qgnn.datasets import load_recsys
from pyg_qgnn.train.recsys import (
    compare_recommenders,
    format_rec_rows,
    load_pretrained,
    plot_rec_rows,
)

#: --quick: a subsample and short schedules that run in minutes on a CPU.
QUICK = dict(users=3000, min_item_interactions=5, epochs=60,
             finetune_epochs=20, eval_every=5, lr=5e-3, batch_size=1024,
             threads=1)


def embedding_dim(text: str) -> int:
    r"""64, 128 or 256, the dimensions of the GNAQ paper."""
    return int(cli.choice(['64', '128', '256'])(text))


def methods_from(args) -> list:
    methods = ['fp32', 'lsq', 'gnaq']
    if args.ablations:
        methods += ['gnaq-no-dqs', 'gnaq-no-rau', 'gnaq-no-rank',
                    'gnaq-eq14', 'gnaq-levels']
    return methods


def main(args):
    if args.plot:
        cli.require_module('matplotlib', '--plot', extra='plot')
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise cli.UserError('argument --device: CUDA is not available here')
    if args.quick:
        for key in ('epochs', 'finetune_epochs', 'eval_every', 'lr',
                    'batch_size', 'threads'):
            if getattr(args, key) is None:
                setattr(args, key, QUICK[key])
    defaults = dict(epochs=1000, finetune_epochs=200, eval_every=10,
                    lr=1e-3, batch_size=2048)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    with cli.user_input('--root' if args.root else '--dataset'):
        data = load_recsys(args.dataset, args.root, seed=args.split_seed)
    if args.quick:
        data = data.subsample(QUICK['users'], seed=args.split_seed,
                              min_item_interactions=QUICK[
                                  'min_item_interactions'])
    print(data.describe())
    pretrained = None
    if args.pretrained:
        with cli.user_input('--pretrained'):
            pretrained = load_pretrained(args.pretrained, data, args.dim)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    methods = methods_from(args)
    bar = tqdm(disable=args.no_progress, desc='validations', unit='eval')

    def progress(method, entry):
        if args.no_progress:  # a line per validation, for logs
            print(f"{method} epoch {entry['epoch']}: loss "
                  f"{entry['loss']:.4f}, validation Recall@20 "
                  f"{entry['recall@20']:.4f}", flush=True)
            return
        bar.set_postfix(method=method, epoch=entry['epoch'],
                        recall20=f"{entry['recall@20']:.4f}")
        bar.update()

    start = time.perf_counter()
    rows, curves = compare_recommenders(
        data, methods, args.dim, args.bits, args.layers, args.epochs,
        args.finetune_epochs, args.lr, args.finetune_lr, args.batch_size,
        args.reg, args.finetune_reg, eval_every=args.eval_every,
        patience=args.patience, seeds=args.seeds, pretrained=pretrained,
        device=args.device, progress=progress,
        save_float=args.save_pretrained)
    bar.close()
    name = data.name if not data.synthetic else \
        f'a SYNTHETIC stand-in for {data.name}'
    subsample = ' (subsample, --quick)' if args.quick else ''
    title = (f'LightGCN ({args.layers} layers) on {name}{subsample}: test '
             f'metrics of the validation-selected models, {args.seeds} '
             f'seed(s)')
    print(f'\n{title}')
    print(format_rec_rows(rows))
    print(f'\n({time.perf_counter() - start:.0f} s)')
    if args.save_pretrained and pretrained is None:
        print(f'float LightGCN (seed 0) written to {args.save_pretrained}')
    records = [dict(asdict(row), dataset=data.name, source=data.kind,
                    quick=args.quick) for row in rows]
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(rows=records, curves=curves), f, indent=2)
        print(f'rows and validation curves written to {args.json}')
    if args.plot:
        plot_rec_rows(rows, args.plot, title)
        print(f'plot written to {args.plot}')
    return records


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('--dataset', default='gowalla',
                        help='dataset folder name, LightGCN text format or '
                        'LightGNN pickles (default: gowalla)')
    parser.add_argument('--root', type=cli.existing_dir, default=None,
                        help='folder holding <dataset>/ (default: '
                        '$PYG_QGNN_DATA, else ../shared/data, else the '
                        'LightGCN repository\'s download for gowalla, '
                        'yelp2018 and amazon-book, else a SYNTHETIC '
                        'stand-in)')
    parser.add_argument('--dim', type=embedding_dim, default=64,
                        help='embedding dimension d: 64, 128 or 256 '
                        '(default: 64)')
    parser.add_argument('--bits', type=cli.bit_width, default=2,
                        help='code width of the quantized methods, in 1..8 '
                        '(default: 2)')
    parser.add_argument('--layers', type=cli.positive_int, default=3,
                        help='LightGCN layers (default: 3)')
    parser.add_argument('--epochs', type=cli.positive_int, default=None,
                        help='most float training epochs (default: 1000; '
                        f'{QUICK["epochs"]} with --quick)')
    parser.add_argument('--finetune-epochs', type=cli.positive_int,
                        default=None,
                        help='most fine-tuning epochs per quantized method '
                        f'(default: 200; {QUICK["finetune_epochs"]} with '
                        '--quick)')
    parser.add_argument('--eval-every', type=cli.positive_int, default=None,
                        help='epochs between validations (default: 10; '
                        f'{QUICK["eval_every"]} with --quick)')
    parser.add_argument('--patience', type=cli.positive_int, default=10,
                        help='validations without improvement before '
                        'stopping (default: 10)')
    parser.add_argument('--lr', type=cli.positive_float, default=None,
                        help='float learning rate (default: 1e-3; '
                        f'{QUICK["lr"]:g} with --quick)')
    parser.add_argument('--finetune-lr', type=cli.positive_float,
                        default=1e-3,
                        help='fine-tuning learning rate (default: 1e-3)')
    parser.add_argument('--batch-size', type=cli.positive_int, default=None,
                        help='triples per step (default: 2048; '
                        f'{QUICK["batch_size"]} with --quick)')
    parser.add_argument('--reg', type=cli.number_in(0, 1), default=1e-4,
                        help='L2 weight of float training (default: 1e-4)')
    parser.add_argument('--finetune-reg', type=cli.number_in(0, 1),
                        default=5e-4,
                        help='L2 weight of fine-tuning (default: 5e-4)')
    parser.add_argument('--ablations', action='store_true',
                        help='also run GNAQ without the dynamic step, without '
                        'the relation-aware update, without the rank loss, '
                        'with codes from the neighbour mean alone (Eq. 14 as '
                        'written) and with the levels appended to the scored '
                        'encoding (Eq. 11 as written)')
    parser.add_argument('--seeds', type=cli.positive_int, default=1,
                        help='repetitions (default: 1)')
    parser.add_argument('--split-seed', type=cli.nonnegative_int, default=0,
                        help='seed of the carved validation split and of the '
                        '--quick subsample (default: 0)')
    parser.add_argument('--pretrained', type=cli.existing_path, default=None,
                        metavar='PATH',
                        help='start from this float LightGCN (a safetensors '
                        'file written with --save-pretrained) instead of '
                        'training one')
    parser.add_argument('--save-pretrained', type=cli.output_path,
                        default=None, metavar='PATH',
                        help='write the float LightGCN trained for seed 0 to '
                        'PATH (safetensors), for a later --pretrained')
    parser.add_argument('--quick', action='store_true',
                        help=f'a subsample ({QUICK["users"]} users, items '
                        f'with >= {QUICK["min_item_interactions"]} '
                        'interactions) and short schedules: the whole path in '
                        'minutes on a CPU; metrics not comparable to the full '
                        'data')
    parser.add_argument('--threads', type=cli.positive_int, default=None,
                        help='torch.set_num_threads(THREADS) (default: '
                        'PyTorch\'s choice; 1 with --quick, whose small '
                        'tensors gain nothing from threads)')
    parser.add_argument('--device', type=cli.choice(['cpu', 'cuda']),
                        default='cpu', help='cpu or cuda (default: cpu)')
    parser.add_argument('--json', type=cli.output_path, metavar='PATH',
                        help='write the rows and validation curves as JSON')
    parser.add_argument('--plot', type=cli.output_path, metavar='PATH',
                        help='write test Recall@20 against stored bytes as a '
                        'PNG')
    parser.add_argument('--no-progress', action='store_true',
                        help='a line per validation instead of the progress bar '
                        '(for logs)')
    return parser


if __name__ == '__main__':
    sys.exit(cli.run(main, build_parser()))
