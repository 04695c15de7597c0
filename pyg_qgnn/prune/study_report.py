r"""Tables and figures of the compression study, in the shape of `Khedri et
al. (2025) <https://arxiv.org/abs/2510.22058>`_: Table 5 (size ratios),
Tables 9–12 (score, size ratio and inference time per sparsity), Tables
13–16 (energy, CPU, memory), Table 17 (:math:`L_2` sweep), Tables 7–8
(quantization) and the lottery-ticket test; Figures 2–10 as PNG.

Every function takes the rows of :func:`~pyg_qgnn.prune.study.aggregate`.
"""
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from pyg_qgnn.train import markdown_table

Criterion = Tuple[str, Callable[[dict], str]]
SCOPE_NAMES = {'global': 'global', 'layer': 'fine-grained'}


def _pm(name: str, scale: float = 1.0, digits: int = 2
        ) -> Callable[[dict], str]:
    def cell(row: dict) -> str:
        mean = row.get(f'{name}_mean')
        if mean is None:
            return 'n/a'
        return f'{scale * mean:.{digits}f} ± {scale * row[name + "_std"]:.{digits}f}'
    return cell


def _ratio(name: str = 'bytes') -> Callable[[dict], str]:
    return lambda row: f"{row['dense_bytes_mean'] / row[name + '_mean']:.2f}x"


def _group(row: dict) -> str:
    kind = '' if row['source'] == 'real' else ' (SYNTHETIC)'
    return f"{row['task']} / {row['dataset']}{kind} / {row['model']}"


def _pivot(rows: Sequence[dict], column: str, label: Callable, criteria:
           Sequence[Criterion]) -> str:
    r"""A table with one block of criteria per (task, dataset, model) and
    one column per value of :obj:`column`."""
    values = list(dict.fromkeys(r[column] for r in rows))
    if all(isinstance(v, (int, float)) for v in values):
        values.sort()
    groups: Dict[str, Dict] = {}
    for row in rows:
        groups.setdefault(_group(row), {})[row[column]] = row
    body = []
    for name, by_value in groups.items():
        for criterion, cell in criteria:
            body.append([name, criterion] + [
                cell(by_value[v]) if v in by_value else '' for v in values])
    return markdown_table(['task / dataset / model', 'criterion'] +
                          [label(v) for v in values], body)


def _select(rows: Sequence[dict], **fields) -> List[dict]:
    return [r for r in rows
            if all(r.get(k) == v for k, v in fields.items())]


def size_table(rows: Sequence[dict]) -> str:
    r"""Table 5: dense file size over sparse checkpoint size, fp32 and int8
    values, per scope and sparsity (after pruning, before fine-tuning)."""
    parts = []
    for scope, scope_name in SCOPE_NAMES.items():
        chosen = _select(rows, part='prune', scope=scope, finetuned=False)
        if chosen:
            parts.append(f'{scope_name} pruning: dense / sparse checkpoint '
                         f'size\n\n' + _pivot(
                             chosen, 'sparsity', lambda s: f'{s:g}',
                             [('fp32 values', _ratio()),
                              ('int8 values', _ratio('bytes_int8'))]))
    return '\n\n'.join(parts)


def pruning_table(rows: Sequence[dict], scope: str, finetuned: bool) -> str:
    r"""Tables 9–12: test score, size ratio and inference time per
    sparsity, for one scope with or without fine-tuning."""
    chosen = _select(rows, part='prune', scope=scope, finetuned=finetuned)
    return _pivot(chosen, 'sparsity', lambda s: f'{s:g}', [
        ('test score (acc. or AUC)', _pm('score')),
        ('achieved sparsity', _pm('achieved')),
        ('size ratio (fp32)', _ratio()),
        ('inference (ms)', _pm('time_s', 1e3, 3))])


def pruning_resource_table(rows: Sequence[dict], scope: str,
                           finetuned: bool) -> str:
    r"""Tables 13–16: energy, CPU and memory of inference per sparsity."""
    chosen = _select(rows, part='prune', scope=scope, finetuned=finetuned)
    return _pivot(chosen, 'sparsity', lambda s: f'{s:g}', _RESOURCES)


_RESOURCES = [('energy per inference (J)', _pm('energy_j', 1.0, 4)),
              ('CPU (%)', _pm('cpu_percent', 1.0, 1)),
              ('peak memory (MB)', _pm('peak_rss_mb', 1.0, 1))]


def l2_table(rows: Sequence[dict]) -> str:
    r"""Table 17: score, score after magnitude thresholding, achieved
    sparsity and the cost of training, per regularisation rate."""
    return _pivot(_select(rows, part='l2'), 'rate', lambda r: f'{r:g}', [
        ('test score', _pm('score')),
        ('test score after threshold', _pm('pruned_score')),
        ('achieved sparsity', _pm('achieved')),
        ('training (s)', _pm('train_time_s', 1.0, 1)),
        ('training energy (J)', _pm('train_energy_j', 1.0, 2)),
        ('training CPU (%)', _pm('train_cpu_percent', 1.0, 1)),
        ('training peak memory (MB)', _pm('train_peak_rss_mb', 1.0, 1))])


def quant_table(rows: Sequence[dict]) -> str:
    r"""Tables 7 and 8: score, training time, inference, size and costs
    per quantization method."""
    chosen = [dict(row, column=row['method'] if row['method'] == 'FP32'
                   else f"{row['method']}-INT{row['bits']}")
              for row in _select(rows, part='quant')]
    return _pivot(chosen, 'column', str, [
        ('test score', _pm('score')),
        ('average bits', _pm('avg_bits', 1.0, 2)),
        ('training (s)', _pm('train_time_s', 1.0, 1)),
        ('inference (ms)', _pm('time_s', 1e3, 3)),
        ('size ratio (deploy.save)', _ratio())] + _RESOURCES)


def lottery_table(rows: Sequence[dict]) -> str:
    r"""The lottery-ticket test: rewound tickets against the same masks on
    random weights, per sparsity."""
    def gap(row):
        if row.get('random_mean') is None:
            return ''
        return f"{100 * (row['ticket_mean'] - row['random_mean']):+.2f}"
    return _pivot(_select(rows, part='lottery'), 'sparsity',
                  lambda s: f'{s:g}', [
                      ('ticket (rewound to init)', _pm('ticket')),
                      ('random re-init, same masks', _pm('random')),
                      ('ticket - random (points)', gap)])


def all_tables(rows: Sequence[dict]) -> str:
    r"""Every table that :obj:`rows` has data for, with headings."""
    out = []
    if _select(rows, part='prune'):
        out.append(('Table 5: size ratio', size_table(rows)))
        number = 9
        for scope in SCOPE_NAMES:
            for finetuned in (False, True):
                if _select(rows, part='prune', scope=scope,
                           finetuned=finetuned):
                    how = 'with' if finetuned else 'without'
                    name = f'{SCOPE_NAMES[scope]} pruning {how} fine-tuning'
                    out.append((f'Table {number}: {name}',
                                pruning_table(rows, scope, finetuned)))
                    out.append((f'Table {number + 4}: resources, {name}',
                                pruning_resource_table(rows, scope,
                                                       finetuned)))
                number += 1
    if _select(rows, part='l2'):
        out.append(('Table 17: L2 regularisation', l2_table(rows)))
    if _select(rows, part='quant'):
        out.append(('Tables 7-8: quantization', quant_table(rows)))
    if _select(rows, part='lottery'):
        out.append(('Lottery-ticket test', lottery_table(rows)))
    return '\n\n'.join(f'### {title}\n\n{table}' for title, table in out)


# Figures #####################################################################

Series = Dict[str, List[Tuple[float, float, float]]]


def plot_panels(panels: Dict[str, Series], path: str, xlabel: str,
                ylabel: str, title: str = '', xscale: str = 'linear',
                note: Optional[str] = None):
    r"""One subplot per panel, one line (with error bars) per series."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    count = max(len(panels), 1)
    fig, axes = plt.subplots(1, count, figsize=(4.5 * count, 3.6),
                             squeeze=False)
    for ax, (name, series) in zip(axes[0], panels.items()):
        for label, points in series.items():
            points = sorted(p for p in points if p[1] is not None)
            if points:
                xs, ys, errs = zip(*points)
                ax.errorbar(xs, ys, yerr=errs, marker='o', ms=3, capsize=2,
                            label=label)
        ax.set_xscale(xscale, **({'linthresh': 1e-6} if xscale == 'symlog'
                                 else {}))
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    if note:
        fig.text(0.5, 0.5, note, ha='center', va='center', fontsize=9,
                 color='gray', wrap=True,
                 bbox=dict(facecolor='white', edgecolor='lightgray'))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curves(rows: Sequence[dict], panel: Callable, series: Callable, x: str,
            y: str, scale: float = 1.0) -> Dict[str, Series]:
    panels: Dict[str, Series] = {}
    for row in rows:
        mean = row.get(f'{y}_mean')
        point = (row[x], None if mean is None else scale * mean,
                 0.0 if mean is None else scale * row[f'{y}_std'])
        panels.setdefault(panel(row), {}).setdefault(series(row), []) \
            .append(point)
    return panels


def _energy_note(rows: Sequence[dict]) -> Optional[str]:
    if rows and all(r.get('energy_j_mean', r.get('train_energy_j_mean'))
                    is None for r in rows):
        return f"energy {rows[0].get('energy_source', 'unavailable')}"
    return None


def write_figures(rows: Sequence[dict], folder: str) -> List[str]:
    r"""Figures 2–10 (and the lottery test) for the parts :obj:`rows`
    cover, as PNG files in :obj:`folder`; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    written = []

    def save(name, panels, *args, **kwargs):
        path = os.path.join(folder, name)
        plot_panels(panels, path, *args, **kwargs)
        written.append(path)

    prune = _select(rows, part='prune')
    if prune:
        layers = {}
        for row in _select(prune, scope='global', finetuned=False):
            for layer, value in row.get('layers', {}).items():
                layers.setdefault(_group(row), {}).setdefault(layer, []) \
                    .append((row['sparsity'], value, 0.0))
        save('figure2_layer_sparsity.png', layers, 'global sparsity',
             'zeros in the layer', 'Figure 2: layer-wise sparsity of global '
             'pruning')
        by_scope = lambda r: f"{SCOPE_NAMES[r['scope']]} pruning"  # noqa
        label = lambda r: (f"{_group(r)}, "  # noqa: E731
                           f"{'fine-tuned' if r['finetuned'] else 'pruned'}")
        for number, (y, name, scale) in enumerate([
                ('score', 'test score', 1.0),
                ('peak_rss_mb', 'peak memory (MB)', 1.0),
                ('energy_j', 'energy per inference (J)', 1.0),
                ('cpu_percent', 'CPU (%)', 1.0)], start=3):
            note = _energy_note(prune) if y == 'energy_j' else None
            save(f'figure{number}_{y}.png',
                 _curves(prune, by_scope, label, 'sparsity', y, scale),
                 'sparsity', name, f'Figure {number}: {name} against '
                 f'sparsity', note=note)
    l2 = _select(rows, part='l2')
    if l2:
        for number, (y, name) in enumerate([
                ('score', 'test score'),
                ('train_peak_rss_mb', 'training peak memory (MB)'),
                ('train_energy_j', 'training energy (J)'),
                ('train_cpu_percent', 'training CPU (%)')], start=7):
            note = _energy_note(l2) if 'energy' in y else None
            save(f'figure{number}_l2_{y}.png',
                 _curves(l2, lambda r: 'L2 regularisation', _group, 'rate', y),
                 'rate', name, f'Figure {number}: {name} against the L2 rate',
                 xscale='symlog', note=note)
    lottery = _select(rows, part='lottery')
    if lottery:
        panels = {}
        for row in lottery:
            for kind in ('ticket', 'random'):
                if row.get(f'{kind}_mean') is not None:
                    panels.setdefault(_group(row), {}).setdefault(
                        kind, []).append((row['sparsity'],
                                          row[f'{kind}_mean'],
                                          row[f'{kind}_std']))
        save('lottery_ticket.png', panels, 'sparsity', 'test score',
             'Lottery tickets (rewound) against random re-initialisation')
    return written
