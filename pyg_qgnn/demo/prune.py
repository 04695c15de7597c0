r"""Demo section ``prune``: a 2-layer GCN on a Planetoid graph, pruned by
global magnitude pruning (one threshold over all weights) to each sparsity,
scored as pruned and after fine-tuning with the masks held, and saved as an
exact sparse checkpoint (pyg_qgnn.prune.save_sparse: kept values plus
their compressed positions; it loads back bit for bit).

Columns: sparsity asked for and achieved; whether the pruned model was
fine-tuned; test accuracy of the epoch with the best validation accuracy
(mean ± std over seeds); bytes of the sparse checkpoint with fp32 and with
int8 values; how many times smaller than the dense file of
pyg_qgnn.deploy.save.
"""
from typing import List

from pyg_qgnn import cli
from pyg_qgnn.prune.study import aggregate, pruning_sweep
from pyg_qgnn.prune.tasks import load_task
from pyg_qgnn.train import markdown_table


def run_prune(dataset: str = 'Cora', root=None, seeds: int = 5,
              epochs: int = 100, finetune_epochs: int = 20,
              sparsities=(0.0, 0.5, 0.9), progress: bool = True):
    r"""Rows (one per sparsity and fine-tuning) and the task they come
    from."""
    from tqdm.auto import tqdm

    for name, value in dict(seeds=seeds, epochs=epochs,
                            finetune_epochs=finetune_epochs).items():
        if value < 1:
            raise ValueError(f"'{name}' must be a positive integer "
                             f"(got {value})")
    task = load_task('node', dataset, root)
    data = task.data
    print(f'[pyg_qgnn] {task.dataset}: {data.num_nodes} nodes, '
          f'{data.num_edges} edges ({task.source} data)')
    with tqdm(total=seeds * len(sparsities), disable=not progress,
              desc='seeds x sparsities') as bar:
        records = pruning_sweep(task, 'gcn', seeds, sparsities, epochs,
                                finetune_epochs, scopes=('global', ),
                                repeats=3, progress=bar.update)
    return aggregate(records), task


def table(rows: List[dict]) -> str:
    return markdown_table(
        ['sparsity', 'achieved', 'fine-tuned', 'test accuracy',
         'bytes (fp32)', 'bytes (int8)', 'smaller than dense (fp32 / int8)'],
        [[f"{r['sparsity']:.2f}", f"{r['achieved_mean']:.3f}",
          'yes' if r['finetuned'] else 'no',
          f"{100 * r['score_mean']:.2f} ± {100 * r['score_std']:.2f}",
          round(r['bytes_mean']), round(r['bytes_int8_mean']),
          f"{r['dense_bytes_mean'] / r['bytes_mean']:.2f}x / "
          f"{r['dense_bytes_mean'] / r['bytes_int8_mean']:.2f}x"]
         for r in rows])


def run(args) -> List[dict]:
    with cli.user_input('--root' if args.root else '--dataset'):
        rows, task = run_prune(args.dataset, args.root, args.seeds,
                               args.prune_epochs, args.prune_finetune_epochs,
                               args.prune_sparsities,
                               progress=not args.no_progress)
    name = (f'a SYNTHETIC stand-in for {task.dataset} (not {task.dataset}; '
            f'accuracies are not comparable)' if task.source == 'synthetic'
            else task.dataset)
    print(f'\nGCN on {name}, global magnitude pruning: test accuracy over '
          f'{args.seeds} seeds and exact sparse checkpoint sizes')
    print(table(rows))
    plot = args.plot_path('prune')
    if plot:
        from pyg_qgnn.prune.study_report import plot_panels
        series = {}
        for r in rows:
            label = 'fine-tuned' if r['finetuned'] else 'pruned'
            series.setdefault(label, []).append(
                (r['sparsity'], 100 * r['score_mean'], 100 * r['score_std']))
        plot_panels({f'GCN on {name}': series}, plot, 'global sparsity',
                    'test accuracy (%)')
        print(f'plot written to {plot}')
    keep = ('sparsity', 'finetuned', 'runs', 'achieved_mean', 'score_mean',
            'score_std', 'bytes_mean', 'bytes_int8_mean', 'dense_bytes_mean')
    return [dict({k: r[k] for k in keep}, section='prune',
                 dataset=task.dataset, source=task.source) for r in rows]


def add_arguments(parser):
    parser.add_argument('--prune-epochs', type=cli.positive_int, default=100,
                        help='training epochs of the dense GCN (default: 100)')
    parser.add_argument('--prune-finetune-epochs', type=cli.positive_int,
                        default=20,
                        help='fine-tuning epochs after pruning (default: 20)')
    parser.add_argument('--prune-sparsities', nargs='+', metavar='S',
                        type=cli.number_in(0, 0.99), default=[0.0, 0.5, 0.9],
                        help='global sparsities, each in [0, 0.99] '
                        '(default: 0 0.5 0.9)')
