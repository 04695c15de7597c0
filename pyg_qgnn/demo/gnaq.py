r"""Demo section ``gnaq``: a float LightGCN against 2-bit GNAQ (node-aware
dynamic quantization: per-node codes, FP8 level tables learned through
message passing, relation-aware code updates) on a small subsample of the
Gowalla split, both selected on validation Recall@20.

Columns: method and bits; test Recall@20 and NDCG@20 (all items ranked,
training items left out; mean ± std over seeds); bytes of the stored
embedding table (float32, or packed 2-bit codes plus four FP8 levels per
node); how many times smaller than the float table.
"""
from dataclasses import asdict
from typing import List

import torch
from tqdm.auto import tqdm

from pyg_qgnn import cli
from pyg_qgnn.datasets import load_recsys
from pyg_qgnn.train.recsys import compare_recommenders, plot_rec_rows
from pyg_qgnn.train.results import markdown_table

#: About 45 seconds on 2 CPU cores per seed (float training included).
USERS, MIN_ITEM_INTERACTIONS = 2000, 5


def run(args) -> List[dict]:
    with cli.user_input('--gnaq-root' if args.gnaq_root else None):
        data = load_recsys('gowalla', args.gnaq_root)
    data = data.subsample(args.gnaq_users, min_item_interactions=
                          MIN_ITEM_INTERACTIONS)
    print(f'[pyg_qgnn] {data.describe()}')
    seeds = min(args.seeds, args.gnaq_seeds)
    # Tensors this small gain nothing from threads, which lose a lot
    # waiting for each other on a busy machine (20x here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tqdm(disable=args.no_progress, desc='gnaq validations') as bar:
            rows, _ = compare_recommenders(
                data, ['fp32', 'gnaq'], embedding_dim=64, bits=2,
                epochs=args.gnaq_epochs,
                finetune_epochs=args.gnaq_finetune_epochs, lr=5e-3,
                batch_size=1024, eval_every=5, patience=4, seeds=seeds,
                progress=lambda method, entry: bar.update())
    finally:
        torch.set_num_threads(threads)
    name = ('a SYNTHETIC stand-in for gowalla' if data.synthetic
            else 'a Gowalla subsample')
    print(f'\nLightGCN on {name}: test metrics of the validation-selected '
          f'models, {seeds} seed(s)')
    base = rows[0].bytes
    print(markdown_table(
        ['method', 'bits', 'Recall@20', 'NDCG@20', 'embedding bytes',
         'smaller by'],
        [[r.method, r.bits,
          f"{r.test['recall@20']:.4f} ± {r.test_std['recall@20']:.4f}",
          f"{r.test['ndcg@20']:.4f} ± {r.test_std['ndcg@20']:.4f}",
          r.bytes, f'{base / r.bytes:.1f}x'] for r in rows]))
    plot = args.plot_path('gnaq')
    if plot:
        plot_rec_rows(rows, plot, f'LightGCN on {name}')
        print(f'plot written to {plot}')
    return [dict(asdict(row), section='gnaq', dataset=data.name,
                 source=data.kind) for row in rows]


def add_arguments(parser):
    parser.add_argument('--gnaq-root', default=None, type=cli.existing_dir,
                        metavar='ROOT',
                        help='gnaq: folder holding gowalla/ (default: '
                        '$PYG_QGNN_DATA, else ../shared/data, else the '
                        'LightGCN download, else a SYNTHETIC stand-in)')
    parser.add_argument('--gnaq-users', type=cli.positive_int, default=USERS,
                        metavar='N',
                        help=f'gnaq: users drawn from Gowalla (default: '
                        f'{USERS})')
    parser.add_argument('--gnaq-epochs', type=cli.positive_int, default=40,
                        metavar='N',
                        help='gnaq: most float LightGCN epochs (default: 40)')
    parser.add_argument('--gnaq-finetune-epochs', type=cli.positive_int,
                        default=10, metavar='N',
                        help='gnaq: most GNAQ fine-tuning epochs '
                        '(default: 10)')
    parser.add_argument('--gnaq-seeds', type=cli.positive_int, default=1,
                        metavar='N',
                        help='gnaq: at most this many of --seeds (recommender '
                        'training is the slow part) (default: 1)')
