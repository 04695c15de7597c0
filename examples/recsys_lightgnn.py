r"""LightGNN (Chen et al., WSDM 2025): prune a LightGCN recommender's edges
and embedding entries under hierarchical distillation, and measure what the
pruned student really costs.

A float LightGCN teacher is trained (or loaded with --pretrained) and
selected on validation Recall@20. An intermediate model on the graph
augmented with 3-hop user-item pairs (Eq. 7) learns edge weights from it;
the student then prunes, run by run, the edges with the lowest decision
weights (Eq. 8) and the embedding entries of lowest saliency |e * e_final|
(the same share of every user's edges and of every node's entries) until
it keeps --edge-keep of the edges and --emb-keep of the entries, distilled
from the intermediate model (Eq. 5, 6; from the teacher instead when the
intermediate model scores lower on validation, column "from") with the
uniformity constraint (Eq. 9); its layer weights are then chosen on
validation. Every selection is made on validation; test is scored once.

Columns: test Recall@20/40 and NDCG@20/40; validation Recall@20; kept
shares of the training edges and of the embedding entries; propagation
layers; bytes stored (teacher: float32 table + CSR graph; student: its
DeployedLightGNN file contents: kept edges with their weights in
--edge-values, entry bitmap and float32 values); forward FLOPs and measured
forward time (final embeddings from the stored model) against the
teacher's; training seconds.

Examples:

    python examples/recsys_lightgnn.py --quick             # minutes on a CPU
    python examples/recsys_lightgnn.py --dataset lightgnn_yelp \
        --edge-keep 0.77 --emb-keep 0.33 --json yelp.json
    python examples/recsys_lightgnn.py --edge-keep 0.44 --ablation
    python examples/recsys_lightgnn.py --methods lightgnn random-both
"""
import json
import time
from dataclasses import asdict, replace

import torch
from tqdm.auto import tqdm

from pyg_qgnn import cli
from pyg_qgnn.datasets import load_recsys
from pyg_qgnn.nn.models.lightgnn import EDGE_VALUE_DTYPES
from pyg_qgnn.train.lightgnn import ABLATIONS, LightGNNConfig
from pyg_qgnn.train.lightgnn_pipeline import (
    format_lightgnn_rows,
    plot_lightgnn_rows,
    run_lightgnn,
    time_forwards,
)
from pyg_qgnn.train.recsys import (
    lightgcn,
    load_pretrained,
    save_pretrained,
    train_recommender,
)

#: --quick: a subsample and short schedules that run in minutes on a CPU.
QUICK = dict(users=3000, min_item_interactions=5, epochs=40, run_epochs=3,
             final_epochs=6, intermediate_epochs=4, batch_size=1024)


def main(args):
    if args.plot:
        cli.require_module('matplotlib', '--plot', extra='plot')
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise cli.UserError('argument --device: CUDA is not available here')
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    defaults = dict(epochs=300, run_epochs=10, final_epochs=30,
                    intermediate_epochs=20, batch_size=4096)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, QUICK[key] if args.quick else value)
    with cli.user_input('--root' if args.root else '--dataset'):
        data = load_recsys(args.dataset, args.root, seed=args.seed)
    if args.quick:
        data = data.subsample(QUICK['users'], seed=args.seed,
                              min_item_interactions=QUICK[
                                  'min_item_interactions'])
    print(data.describe())
    bar = tqdm(disable=args.no_progress, desc='validations', unit='eval')

    def progress(stage, entry):
        if args.no_progress:  # a line per validation, for logs
            print(f"{stage} epoch {entry['epoch']}: validation Recall@20 "
                  f"{entry['recall@20']:.4f}", flush=True)
            return
        bar.set_postfix(stage=stage, epoch=entry['epoch'],
                        recall20=f"{entry['recall@20']:.4f}")
        bar.update()

    start = time.perf_counter()
    teacher_seconds = 0.0
    if args.pretrained:
        with cli.user_input('--pretrained'):
            teacher = load_pretrained(args.pretrained, data, args.dim)
        if teacher.num_layers != args.teacher_layers:
            raise cli.UserError(f'argument --pretrained: the saved teacher '
                                f'has {teacher.num_layers} layers, not '
                                f'--teacher-layers {args.teacher_layers}')
        teacher = teacher.to(args.device)
    else:
        teacher = lightgcn(data.num_users, data.num_items, args.dim,
                           args.teacher_layers).to(args.device)
        result = train_recommender(
            teacher, data, args.epochs, lr=args.teacher_lr,
            batch_size=args.batch_size, eval_every=5, patience=6,
            ks=(20, 40), seed=args.seed,
            progress=lambda entry: progress('teacher', entry))
        teacher_seconds = result.train_seconds
        if args.save_pretrained:
            save_pretrained(teacher, args.save_pretrained, data)
            print(f'teacher written to {args.save_pretrained}')
    config = replace(
        LightGNNConfig(), embedding_dim=args.dim,
        student_layers=args.student_layers, edge_keep=args.edge_keep,
        entry_keep=args.emb_keep, edge_step=args.edge_step,
        entry_step=args.emb_step, run_epochs=args.run_epochs,
        final_epochs=args.final_epochs,
        intermediate_epochs=args.intermediate_epochs, lr=args.lr,
        batch_size=args.batch_size, residual=args.residual,
        edge_value_dtype=args.edge_values,
        select_source=not args.always_intermediate, seed=args.seed)
    if args.paper_pruning:
        config = replace(config, edge_scope='graph', entry_scope='table',
                         entry_score='magnitude', tune_alpha=False,
                         standardize_importance=False)
    methods = list(ABLATIONS) if args.ablation else args.methods
    run = run_lightgnn(data, teacher, config, methods, teacher_seconds,
                       progress)
    bar.close()
    time_forwards(run, data, min_run_time=0.2 if args.quick else 1.0)
    name = data.name if not data.synthetic else \
        f'a SYNTHETIC stand-in for {data.name}'
    subsample = ' (subsample, --quick)' if args.quick else ''
    title = (f'LightGNN on {name}{subsample}: keep {args.edge_keep:.0%} of '
             f'edges and {args.emb_keep:.0%} of embedding entries, d = '
             f'{args.dim}; test metrics of validation-selected models')
    print(f'\n{title}')
    print(format_lightgnn_rows(run.rows))
    print(f'\n({time.perf_counter() - start:.0f} s)')
    records = [dict(asdict(row), dataset=data.name, source=data.kind,
                    quick=args.quick, config=asdict(config))
               for row in run.rows]
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(rows=records), f, indent=2)
        print(f'rows and validation curves written to {args.json}')
    if args.plot:
        plot_lightgnn_rows(run.rows, args.plot, title)
        print(f'plot written to {args.plot}')
    return records


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('--dataset', default='gowalla',
                        help='dataset folder name: LightGCN text format '
                        '(gowalla, yelp2018, amazon-book) or LightGNN '
                        'pickles (lightgnn_yelp) (default: gowalla)')
    parser.add_argument('--root', type=cli.existing_dir, default=None,
                        help='folder holding <dataset>/ (default: '
                        '$PYG_QGNN_DATA, else ../shared/data, else the '
                        'LightGCN repository\'s download for gowalla, '
                        'yelp2018 and amazon-book, else a SYNTHETIC '
                        'stand-in)')
    parser.add_argument('--edge-keep', type=cli.share, default=0.44,
                        help='share of training edges the student keeps '
                        '(default: 0.44)')
    parser.add_argument('--emb-keep', type=cli.share, default=0.33,
                        help='share of embedding entries the student keeps '
                        '(default: 0.33)')
    parser.add_argument('--edge-step', type=cli.open_fraction, default=0.15,
                        help='share of the remaining edges pruned per run '
                        '(default: 0.15)')
    parser.add_argument('--emb-step', type=cli.open_fraction, default=0.2,
                        help='share of the remaining entries pruned per run '
                        '(default: 0.2)')
    parser.add_argument('--dim', type=cli.positive_int, default=64,
                        help='embedding dimension d (default: 64)')
    parser.add_argument('--teacher-layers', type=cli.positive_int, default=3,
                        help='LightGCN teacher layers (default: 3)')
    parser.add_argument('--student-layers', type=cli.nonnegative_int,
                        default=2, help='student layers (default: 2)')
    parser.add_argument('--epochs', type=cli.positive_int, default=None,
                        help='most teacher epochs (default: 300; --quick: '
                        '40)')
    parser.add_argument('--run-epochs', type=cli.positive_int, default=None,
                        help='most epochs per pruning run (default: 10; '
                        '--quick: 3)')
    parser.add_argument('--final-epochs', type=cli.positive_int,
                        default=None, help='most epochs of the last, '
                        'fine-tuning run (default: 30; --quick: 6)')
    parser.add_argument('--intermediate-epochs', type=cli.positive_int,
                        default=None, help='most epochs of the '
                        'intermediate model (default: 20; --quick: 4)')
    parser.add_argument('--teacher-lr', type=cli.positive_float,
                        default=5e-3, help='teacher learning rate '
                        '(default: 5e-3)')
    parser.add_argument('--lr', type=cli.positive_float, default=1e-3,
                        help='intermediate and student learning rate '
                        '(default: 1e-3)')
    parser.add_argument('--batch-size', type=cli.positive_int, default=None,
                        help='BPR triples per step (default: 4096; --quick: '
                        '1024)')
    parser.add_argument('--residual', action='store_true',
                        help="add Eq. 4's residual term E_(l-1) unnormalized "
                        '(off by default: it starts the student further '
                        'from the teacher, see LightGNNConfig)')
    parser.add_argument('--paper-pruning', action='store_true',
                        help="the paper's pruning: one threshold over all "
                        'edges and one over the whole table, entries by '
                        "magnitude, Eq. 8's raw prediction term, the layer "
                        "weights the teacher's folded (default: the same "
                        "share of every user's edges and of every node's "
                        'entries, entries by saliency, the term '
                        'standardized, the layer weights chosen on '
                        'validation after the last pruning run; see '
                        'LightGNNConfig)')
    parser.add_argument('--always-intermediate', action='store_true',
                        help='distil the students from the intermediate '
                        'model even when it scores lower on validation '
                        "than the teacher (the paper's; default: from the "
                        'better of the two)')
    parser.add_argument('--edge-values', default='float16',
                        choices=list(EDGE_VALUE_DTYPES),
                        help="the precision the student's edge values are "
                        'trained and stored in (default: float16)')
    parser.add_argument('--ablation', action='store_true',
                        help="also run the paper's variants (Table 3): "
                        'random entry / edge / both pruning, binary edge '
                        'weights, no bilevel alignment, no intermediate KD '
                        'layer, no importance distillation')
    parser.add_argument('--methods', nargs='+', default=['lightgnn'],
                        choices=list(ABLATIONS), metavar='METHOD',
                        help='the students to train, some of: '
                        f"{', '.join(ABLATIONS)} (default: lightgnn; "
                        '--ablation: all)')
    parser.add_argument('--pretrained', type=cli.existing_path, default=None,
                        help='start from this saved float teacher '
                        '(safetensors, see --save-pretrained)')
    parser.add_argument('--save-pretrained', type=cli.output_path,
                        default=None, help='write the trained teacher here')
    parser.add_argument('--quick', action='store_true',
                        help='a 3,000-user subsample and short schedules')
    parser.add_argument('--seed', type=cli.nonnegative_int, default=0,
                        help='seed of training and subsampling (default: 0)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu',
                        help='device (default: cpu)')
    parser.add_argument('--threads', type=cli.positive_int, default=None,
                        help='CPU threads (default: torch\'s)')
    cli.add_output_arguments(parser)
    return parser


if __name__ == '__main__':
    cli.run(main, build_parser())
