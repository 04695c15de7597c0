r"""Demo section ``lightgnn``: a float 3-layer LightGCN teacher against the
LightGNN student (Chen et al., WSDM 2025) on a small subsample of
LightGNN's Yelp split: the student keeps 44% of the training edges and 33%
of the embedding entries, with 2 layers, pruned run by run under the
distillation of an intermediate model on the 3-hop augmented graph. Every
model is selected on validation Recall@20; one seed.

Columns: model and its propagation layers; test Recall@20 (all items
ranked, training and validation items left out); kept shares of the
training edges and of the embedding entries; bytes stored (teacher:
float32 table plus its graph as a CSR; student: its DeployedLightGNN
buffers: kept edges with float16 weights, entry bitmap and the kept
float32 values); how many times smaller than the teacher; forward FLOPs
(final embeddings of all nodes) and how many times fewer; measured forward
time on one thread from the stored model, and the speed-up over the
teacher.
"""
import time
from dataclasses import asdict, replace
from typing import List

import torch
from tqdm.auto import tqdm

from pyg_qgnn import cli
from pyg_qgnn.datasets import load_recsys
from pyg_qgnn.datasets.recsys import synthetic_interactions
from pyg_qgnn.train.lightgnn import LightGNNConfig
from pyg_qgnn.train.lightgnn_pipeline import (
    plot_lightgnn_rows,
    run_lightgnn,
    time_forwards,
)
from pyg_qgnn.train.recsys import lightgcn, train_recommender
from pyg_qgnn.train.results import markdown_table

DATASET = 'lightgnn_yelp'
#: About 35 seconds on 2 busy CPU cores, loading included: 6,500 users
#: drawn keep 3,931 with 1,042 items, 7,953 training, 321 validation and
#: 1,644 test pairs (Yelp is sparse). The distillation and uniformity
#: terms make a step cost grow with the nodes, so an epoch grows about
#: quadratically: 8,000 users take 55 s.
USERS, MIN_ITEM_INTERACTIONS = 6500, 5
#: Offline: a stand-in of one user per 7 drawn (as many items), 10 items
#: each (7 for training): about as many training pairs as the Yelp
#: subsample (the default stand-in would take minutes).
SYNTHETIC_USERS_PER, SYNTHETIC_ITEMS_PER_USER = 7, 10
#: Seconds of repeated forward passes behind each median time.
MIN_RUN_TIME = 0.2


def run(args) -> List[dict]:
    with cli.user_input('--lightgnn-root' if args.lightgnn_root else None):
        data = load_recsys(DATASET, args.lightgnn_root)
    if data.synthetic:
        # The default stand-in (30 items per user, Yelp's ~4) would train
        # for minutes: one with about as many training pairs instead.
        users = max(args.lightgnn_users // SYNTHETIC_USERS_PER, 50)
        data = synthetic_interactions(users, users, SYNTHETIC_ITEMS_PER_USER,
                                      name=DATASET)
    else:
        data = data.subsample(args.lightgnn_users, min_item_interactions=
                              MIN_ITEM_INTERACTIONS)
    print(f'[pyg_qgnn] {data.describe()}')
    config = replace(
        LightGNNConfig(), run_epochs=args.lightgnn_run_epochs,
        final_epochs=args.lightgnn_final_epochs,
        intermediate_epochs=args.lightgnn_intermediate_epochs,
        batch_size=1024, patience=3)
    # Tensors this small gain nothing from threads, which lose a lot
    # waiting for each other on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tqdm(disable=args.no_progress,
                  desc='lightgnn validations') as bar:
            torch.manual_seed(config.seed)
            teacher = lightgcn(data.num_users, data.num_items,
                               config.embedding_dim, 3)
            start = time.perf_counter()
            train_recommender(teacher, data, args.lightgnn_epochs, lr=5e-3,
                              batch_size=1024, eval_every=5, patience=4,
                              ks=(20, 40), seed=config.seed,
                              progress=lambda entry: bar.update())
            teacher_seconds = time.perf_counter() - start
            run = run_lightgnn(data, teacher, config, ['lightgnn'],
                               teacher_seconds,
                               progress=lambda stage, entry: bar.update())
        # The intermediate model only teaches (on more edges than these):
        # the comparison is the deployable teacher against the student.
        run.rows = [r for r in run.rows if r.method != 'intermediate']
        time_forwards(run, data, MIN_RUN_TIME)
    finally:
        torch.set_num_threads(threads)
    name = (f'a SYNTHETIC stand-in for {DATASET}' if data.synthetic
            else 'a Yelp subsample (LightGNN\'s split)')
    print(f'\nLightGNN on {name}: keep {config.edge_keep:.0%} of edges and '
          f'{config.entry_keep:.0%} of embedding entries, '
          f'd = {config.embedding_dim}; test metrics of the '
          f'validation-selected models, 1 seed')
    base = run.rows[0]
    print(markdown_table(
        ['model', 'layers', 'Recall@20', 'edges', 'entries', 'bytes',
         'smaller by', 'FLOPs', 'fewer by', 'forward ms', 'speed-up'],
        [[r.label, r.layers, f"{r.test['recall@20']:.4f}",
          f'{r.edge_share:.0%}', f'{r.entry_share:.0%}', f'{r.bytes:,}',
          f'{base.bytes / r.bytes:.1f}x', f'{r.flops:,}',
          f'{base.flops / r.flops:.1f}x', f'{r.forward_seconds * 1e3:.2f}',
          f'{base.forward_seconds / r.forward_seconds:.1f}x']
         for r in run.rows]))
    plot = args.plot_path('lightgnn')
    if plot:
        plot_lightgnn_rows(run.rows, plot, f'LightGNN on {name}')
        print(f'plot written to {plot}')
    out = []
    for row in run.rows:
        record = asdict(row)
        del record['history']  # validation curves: the example keeps them
        out.append(dict(record, section='lightgnn', dataset=data.name,
                        source=data.kind))
    return out


def add_arguments(parser):
    parser.add_argument('--lightgnn-root', default=None,
                        type=cli.existing_dir, metavar='ROOT',
                        help=f'lightgnn: folder holding {DATASET}/ '
                        '(trnMat.pkl, valMat.pkl, tstMat.pkl) (default: '
                        '$PYG_QGNN_DATA, else ../shared/data, else a '
                        'SYNTHETIC stand-in)')
    parser.add_argument('--lightgnn-users', type=cli.positive_int,
                        default=USERS, metavar='N',
                        help=f'lightgnn: users drawn from Yelp (default: '
                        f'{USERS})')
    parser.add_argument('--lightgnn-epochs', type=cli.positive_int,
                        default=40, metavar='N',
                        help='lightgnn: most LightGCN teacher epochs '
                        '(default: 40)')
    parser.add_argument('--lightgnn-intermediate-epochs',
                        type=cli.positive_int, default=4, metavar='N',
                        help='lightgnn: most epochs of the intermediate '
                        'model (default: 4)')
    parser.add_argument('--lightgnn-run-epochs', type=cli.positive_int,
                        default=3, metavar='N',
                        help='lightgnn: most epochs per pruning run '
                        '(default: 3)')
    parser.add_argument('--lightgnn-final-epochs', type=cli.positive_int,
                        default=6, metavar='N',
                        help='lightgnn: most epochs of the last, '
                        'fine-tuning run (default: 6)')
