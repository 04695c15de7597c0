r"""The main job: float GCN vs. its quantized copies on a Planetoid graph.

Trains a float 2-layer GCN, quantizes copies with :func:`quantize_model`
(:class:`QAT` at each bit width), fine-tunes them, and reports test accuracy
(mean ± std over seeds, each model selected on validation accuracy) and the
size of the file :func:`pyg_qgnn.deploy.save` writes for it.
"""
import copy
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch_geometric.nn.models import GCN
from torch_geometric.transforms import NormalizeFeatures
from tqdm.auto import tqdm

from pyg_qgnn import deploy
from pyg_qgnn.datasets import load_planetoid
from pyg_qgnn.quantize import QAT, quantize_model


@dataclass
class DemoRow:
    method: str
    bits: int
    acc_mean: float
    acc_std: float
    bytes: int


def train_node_classifier(model, data, epochs: int, lr: float,
                          weight_decay: float = 5e-4):
    r"""Full-batch training; returns (validation accuracy, test accuracy) of
    the epoch with the best validation accuracy, whose weights are restored
    into :obj:`model`."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr,
                                 weight_decay=weight_decay)
    best_val, best_test, best_state = -1.0, 0.0, None
    for _ in range(epochs):
        model.train()
        optimizer.zero_grad()
        out = model(data.x, data.edge_index)
        F.cross_entropy(out[data.train_mask], data.y[data.train_mask]).backward()
        optimizer.step()
        val, test = evaluate(model, data)
        if val > best_val:
            best_val, best_test = val, test
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return best_val, best_test


@torch.no_grad()
def evaluate(model, data):
    model.eval()
    pred = model(data.x, data.edge_index).argmax(dim=-1)
    return tuple(float((pred[m] == data.y[m]).float().mean())
                 for m in (data.val_mask, data.test_mask))


def _file_size(model) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        return deploy.save(model, os.path.join(tmp, 'model.safetensors'))


def run_demo(dataset: str = 'Cora', root: Optional[str] = None,
             seeds: int = 5, epochs: int = 200, finetune_epochs: int = 100,
             bits: Sequence[int] = (8, 4), observer: str = 'per',
             hidden: int = 16, progress: bool = True) -> List[DemoRow]:
    graph = load_planetoid(dataset, root)
    data = NormalizeFeatures()(graph.data)  # row-normalized, as Kipf & Welling
    print(f'[pyg_qgnn] {dataset}: {data.num_nodes} nodes, '
          f'{data.num_edges} edges, {graph.num_classes} classes '
          f'(from {graph.source}); {graph.split}')
    accs = {('float', 32): []}
    accs.update({('QAT', b): [] for b in bits})
    sizes = {}
    bar = tqdm(total=seeds * (1 + len(bits)), disable=not progress,
               desc='seeds x methods')
    for seed in range(seeds):
        torch.manual_seed(seed)
        # cached: the graph is fixed (transductive), normalize it once.
        model = GCN(data.num_features, hidden, num_layers=2,
                    out_channels=graph.num_classes, dropout=0.5, cached=True)
        accs['float', 32].append(train_node_classifier(model, data, epochs,
                                                       lr=0.01)[1])
        sizes['float', 32] = _file_size(model)
        bar.update()
        for b in bits:
            qmodel = quantize_model(model, QAT(bits=b, observer=observer))
            accs['QAT', b].append(train_node_classifier(
                qmodel, data, finetune_epochs, lr=0.005)[1])
            sizes['QAT', b] = _file_size(qmodel)
            bar.update()
    bar.close()
    return [DemoRow(method, b, statistics.mean(a),
                    statistics.stdev(a) if len(a) > 1 else 0.0,
                    sizes[method, b]) for (method, b), a in accs.items()]


def format_table(rows: Sequence[DemoRow], split: str = 'test') -> str:
    lines = [f'| method | bits | {split} accuracy (mean ± std) | file bytes '
             f'| size ratio |', '|---|---:|---:|---:|---:|']
    base = rows[0].bytes
    for r in rows:
        lines.append(f'| {r.method} | {r.bits} | {100 * r.acc_mean:.2f} ± '
                     f'{100 * r.acc_std:.2f} | {r.bytes:,} | '
                     f'{base / r.bytes:.2f}x |')
    return '\n'.join(lines)


def plot_rows(rows: Sequence[DemoRow], path: str):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in rows:
        ax.errorbar(r.bytes / 1024, 100 * r.acc_mean, yerr=100 * r.acc_std,
                    fmt='o', capsize=3, label=f'{r.method} {r.bits}-bit')
    ax.set_xscale('log')
    ax.set_xlabel('checkpoint size (KiB)')
    ax.set_ylabel('test accuracy (%)')
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args) -> List[DemoRow]:
    start = time.perf_counter()
    rows = run_demo(args.dataset, args.root, args.seeds, args.epochs,
                    args.finetune_epochs, args.bits, args.observer,
                    progress=not args.no_progress)
    print()
    print(f'GCN on {args.dataset}: test accuracy of the model with the best '
          f'validation accuracy, over {args.seeds} seeds')
    print(format_table(rows))
    print(f'\n({time.perf_counter() - start:.0f} s)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump([asdict(r) for r in rows], f, indent=2)
        print(f'rows written to {args.json}')
    if args.plot:
        plot_rows(rows, args.plot)
        print(f'plot written to {args.plot}')
    return rows


def add_arguments(parser):
    parser.add_argument('--dataset', default='Cora',
                        help='Planetoid name: Cora, CiteSeer or PubMed '
                        '(default: Cora)')
    parser.add_argument('--root', default=None,
                        help='folder holding <Name>/raw/ (default: '
                        '$PYG_QGNN_DATA, else ../shared/data, else PyG download, '
                        'else a synthetic stand-in)')
    parser.add_argument('--seeds', type=int, default=5,
                        help='number of seeds (default: 5)')
    parser.add_argument('--epochs', type=int, default=200,
                        help='float training epochs (default: 200)')
    parser.add_argument('--finetune-epochs', type=int, default=100,
                        help='QAT fine-tuning epochs (default: 100)')
    parser.add_argument('--bits', type=int, nargs='+', default=[8, 4],
                        choices=range(1, 9), metavar='BITS',
                        help='QAT bit widths, each in 1..8 (default: 8 4)')
    parser.add_argument('--observer', default='per', choices=['abs', 'mom', 'per'],
                        help='activation range observer (default: per)')
    parser.add_argument('--json', default=None, metavar='PATH',
                        help='write the rows as a JSON list')
    parser.add_argument('--plot', default=None, metavar='PATH',
                        help='write accuracy vs. size as a PNG (needs matplotlib)')
    parser.add_argument('--no-progress', action='store_true',
                        help='hide the progress bar')
