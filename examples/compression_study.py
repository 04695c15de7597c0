r"""The compression study of Khedri et al. (2025), "Pruning and Quantization
Impact on Graph Neural Networks", on real data: Cora node classification
(GCN; SplineConv too when torch-spline-conv is installed), Cora link
prediction (PyG's GAE with a GCN encoder), PROTEINS and BBBP graph
classification (GIN and a 3-layer GCN, 10-fold cross-validation; BBBP needs
RDKit).

Parts (--parts): "prune" is sparsity x {global, fine-grained} x {without,
with fine-tuning}; "l2" trains with an L2 penalty at each rate, then prunes
weights below --l2-threshold; "lottery" is iterative magnitude pruning
rewound to the initial weights against random re-initialisation with the
same masks; "quant" is FP32 against QAT, Degree-Quant and A²Q at each of
--bits. Every model is the epoch with the best validation score, scored on
test data; a run is a seed (Cora) or a fold (graph tasks).

What is measured, per setting as mean ± std over runs: test score
(accuracy; ROC-AUC for link prediction); the size ratio, the dense
safetensors file (pyg_qgnn.deploy.save) over the exact sparse checkpoint
(pyg_qgnn.prune.save_sparse, fp32 or int8 values); inference time (median
of --repeats passes over the test data, masks folded in); peak resident
memory of the process; CPU time over wall time (100% = one core); energy
from RAPL counters where the machine exposes them, else "n/a". The tables
follow the paper's Tables 5, 7-8, 9-16 and 17; --plot-dir writes its
Figures 2-10.

Example (everything on ../shared/data, a few minutes with --quick):

    python examples/compression_study.py --quick --json rows.json --plot-dir figs

    python examples/compression_study.py --task node --parts prune
"""
import json
import os
import sys
import time

from tqdm.auto import tqdm

from pyg_qgnn import cli
from pyg_qgnn.prune import SCOPES
from pyg_qgnn.prune import study, tasks as study_tasks
from pyg_qgnn.prune.study_report import all_tables, write_figures
from pyg_qgnn.train import Method

PARTS = ('prune', 'l2', 'lottery', 'quant')
MODELS = ('gcn', 'spline', 'gae', 'gin', 'gcn3')
#: task -> (epochs, fine-tuning epochs), full and --quick.
EPOCHS = {'node': (200, 50), 'link': (200, 50), 'graph': (100, 50)}
QUICK_EPOCHS = {'node': (40, 10), 'link': (40, 10), 'graph': (2, 1)}
QUICK = dict(runs=2, sparsities=[0.0, 0.5, 0.9], l2_rates=[0.0, 1.0],
             lottery_sparsities=[0.9], repeats=3, bits=[8])


def settle(args):
    r"""Fills the defaults that depend on --quick."""
    for name, value in QUICK.items():
        if getattr(args, name) is None:
            setattr(args, name, value if args.quick else DEFAULTS[name])
    # Sweeps run in increasing order (lottery rounds must).
    args.sparsities = sorted(set(args.sparsities))
    args.lottery_sparsities = sorted(set(args.lottery_sparsities))
    return args


DEFAULTS = dict(runs=5, sparsities=[round(0.1 * i, 1) for i in range(10)],
                l2_rates=list(study.L2_RATES),
                lottery_sparsities=[0.2, 0.4, 0.6, 0.8, 0.9], repeats=10,
                bits=[8, 4])


def load_tasks(args) -> list:
    tasks = []
    for task in args.task:
        for dataset in study_tasks.TASKS[task]:
            if dataset not in args.dataset:
                continue
            if dataset == 'BBBP':
                cli.require_module('rdkit', '--dataset BBBP', extra='chem')
            with cli.user_input('--root' if args.root else '--dataset'):
                loaded = study_tasks.load_task(task, dataset, args.root)
            kind = ('a SYNTHETIC stand-in (not the real data; scores are not '
                    'comparable)' if loaded.source == 'synthetic' else
                    'real data')
            print(f'{task} task on {dataset}: {kind}')
            tasks.append(loaded)
    if not tasks:
        raise cli.UserError(f'argument --dataset: none of {args.dataset} '
                            f'belongs to the tasks {args.task}')
    return tasks


def models_of(task, args) -> list:
    if args.model and 'spline' in args.model and task.task == 'node':
        cli.require_module('torch_spline_conv', '--model spline')
    names = [m for m in task.models if not args.model or m in args.model]
    if args.quick and not args.model and task.task == 'graph':
        names = ['gin']  # --model gcn3 adds the GCN
    if task.task == 'node' and 'spline' not in task.models:
        print('  (SplineConv skipped: torch-spline-conv is not installed)')
    return names


def methods_of(args, task) -> list:
    groups = 64 if task.task == 'graph' else None  # unseen graphs
    return [Method('fp32')] + [
        Method(name, bits, a2q_groups=groups, a2q_target=None)
        for name in args.methods for bits in args.bits]


def units(args, task, models) -> int:
    runs = len(models) * args.runs
    per_run = {'prune': len(SCOPES) * len(args.sparsities),
               'l2': len(args.l2_rates), 'lottery': 1,
               'quant': 1 + len(args.methods) * len(args.bits)}
    return runs * sum(per_run[p] for p in args.parts)


def run_task(task, models, args, bar) -> list:
    epochs, finetune = EPOCHS[task.task] if not args.quick else \
        QUICK_EPOCHS[task.task]
    epochs, finetune = args.epochs or epochs, args.finetune_epochs or finetune
    common = dict(progress=bar.update)
    records = []
    with cli.user_input('--runs'):
        task.runs(args.runs)
    for model in models:
        if 'prune' in args.parts:
            records += study.pruning_sweep(
                task, model, args.runs, args.sparsities, epochs, finetune,
                args.lr, args.finetune_lr, repeats=args.repeats, **common)
        if 'l2' in args.parts:
            records += study.l2_sweep(
                task, model, args.runs, args.l2_rates, args.l2_threshold,
                epochs, args.lr, repeats=args.repeats, **common)
        if 'lottery' in args.parts:
            records += study.lottery_test(
                task, model, args.runs, args.lottery_sparsities, epochs,
                args.lr, **common)
        if 'quant' in args.parts:
            records += study.quant_comparison(
                task, model, args.runs, methods_of(args, task), epochs,
                finetune, args.lr, args.finetune_lr, repeats=args.repeats,
                **common)
    return records


def main(args):
    settle(args)
    if args.plot_dir:
        cli.require_module('matplotlib', '--plot-dir', extra='plot')
    start = time.perf_counter()
    tasks = [(task, models_of(task, args)) for task in load_tasks(args)]
    total = sum(units(args, task, models) for task, models in tasks)
    records = []
    with tqdm(total=total, disable=args.no_progress,
              desc='study (runs x settings)') as bar:
        for task, models in tasks:
            records += run_task(task, models, args, bar)
            write_rows(study.aggregate(records), args.json)  # keep progress
    rows = study.aggregate(records)
    tables = all_tables(rows)
    print('\n' + tables)
    print(f'\n({time.perf_counter() - start:.0f} s; runs = seeds for Cora, '
          f'folds for graph tasks; n/a = not measurable on this machine)')
    if args.json:
        write_rows(rows, args.json)
        print(f'rows written to {args.json}')
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write(tables + '\n')
        print(f'tables written to {args.markdown}')
    if args.plot_dir:
        paths = write_figures(rows, args.plot_dir)
        print(f'{len(paths)} figures written to {args.plot_dir}')
    return rows


def write_rows(rows: list, path) -> None:
    if path:
        with open(path, 'w') as f:
            json.dump(rows, f, indent=2)


def output_dir(text: str) -> str:
    r"""A folder to write into, created if missing."""
    cli.output_path(os.path.join(text, 'figure.png'))
    return text


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('--task', nargs='+', default=list(study_tasks.TASKS),
                        type=cli.choice(list(study_tasks.TASKS)),
                        help='tasks to run (default: node link graph)')
    parser.add_argument('--dataset', nargs='+',
                        default=['Cora', 'PROTEINS', 'BBBP'],
                        type=cli.choice(['Cora', 'PROTEINS', 'BBBP']),
                        help='datasets: Cora (node, link), PROTEINS and BBBP '
                        '(graph) (default: all three)')
    parser.add_argument('--model', nargs='+', type=cli.choice(list(MODELS)),
                        help='models, among gcn and spline (node), gae (link), '
                        'gin and gcn3 (graph) (default: all of each task)')
    parser.add_argument('--parts', nargs='+', default=list(PARTS),
                        type=cli.choice(list(PARTS)),
                        help='parts of the study (default: all four)')
    parser.add_argument('--root', type=cli.existing_dir, default=None,
                        help='folder holding Cora/raw, PROTEINS/raw, '
                        'bbbp/BBBP.csv (default: $PYG_QGNN_DATA, else '
                        '../shared/data, else PyG download, else a synthetic '
                        'stand-in)')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run in minutes, not results to quote: '
                        '2 runs, sparsities 0 0.5 0.9, L2 rates 0 and 1, one '
                        'lottery round, INT8 only, few epochs, GIN only on '
                        'graph tasks')
    parser.add_argument('--runs', type=cli.positive_int, default=None,
                        help='seeds (Cora) or folds of 10 (graph tasks) '
                        '(default: 5; --quick: 2)')
    parser.add_argument('--sparsities', nargs='+', type=cli.number_in(0, 0.99),
                        default=None, metavar='S',
                        help='target sparsities of the prune part '
                        '(default: 0.0 0.1 ... 0.9)')
    parser.add_argument('--l2-rates', nargs='+', type=cli.number_in(0, 1e9),
                        default=None, metavar='RATE',
                        help='L2 rates (default: the paper\'s 19, 0 to 1e6)')
    parser.add_argument('--l2-threshold', type=cli.number_in(0, 1),
                        default=1e-3,
                        help='magnitude below which L2-trained weights are '
                        'pruned (default: 0.001)')
    parser.add_argument('--lottery-sparsities', nargs='+',
                        type=cli.number_in(0.01, 0.99), default=None,
                        metavar='S', help='increasing sparsities of the '
                        'lottery rounds (default: 0.2 0.4 0.6 0.8 0.9)')
    parser.add_argument('--methods', nargs='+', default=['qat', 'dq', 'a2q'],
                        type=cli.choice(['qat', 'dq', 'a2q']),
                        help='quantization methods against FP32 '
                        '(default: qat dq a2q)')
    parser.add_argument('--bits', nargs='+', type=cli.bit_width, default=None,
                        help='bit widths of the quant part (default: 8 4; '
                        '--quick: 8)')
    parser.add_argument('--epochs', type=cli.positive_int, default=None,
                        help='training epochs (default: node and link 200, '
                        'graph 100)')
    parser.add_argument('--finetune-epochs', type=cli.positive_int,
                        default=None,
                        help='fine-tuning epochs after pruning or '
                        'quantization (default: 50)')
    parser.add_argument('--lr', type=cli.positive_float, default=0.01,
                        help='learning rate (default: 0.01)')
    parser.add_argument('--finetune-lr', type=cli.positive_float,
                        default=0.005,
                        help='fine-tuning learning rate (default: 0.005)')
    parser.add_argument('--repeats', type=cli.positive_int, default=None,
                        help='timed inference passes per model (default: 10; '
                        '--quick: 3)')
    parser.add_argument('--json', type=cli.output_path, metavar='PATH',
                        help='write the rows (mean ± std per setting) as JSON')
    parser.add_argument('--markdown', type=cli.output_path, metavar='PATH',
                        help='write the tables as markdown')
    parser.add_argument('--plot-dir', type=output_dir, metavar='DIR',
                        help='write Figures 2-10 as PNG files into DIR')
    parser.add_argument('--no-progress', action='store_true',
                        help='hide the progress bar')
    return parser


if __name__ == '__main__':
    sys.exit(cli.run(main, build_parser()))
