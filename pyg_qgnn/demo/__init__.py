r"""The main job, ``python -m pyg_qgnn demo``: the library's capabilities,
one section each, on real data where it is available and on announced
synthetic stand-ins where not. ``--only NAME`` runs some sections.

Sections:
  quant  GCN on Cora: FP32 against QAT, Degree-Quant (INT8/INT4) and A²Q:
         test accuracy, average bits, checkpoint bytes; each deployed as
         integers: its accuracy, bytes and inference time against float.
  gnaq   LightGCN on a Gowalla subsample: float against 2-bit GNAQ:
         test Recall@20, NDCG@20, stored embedding bytes.
  prune  GCN on Cora at 50% and 90% global sparsity, with and without
         fine-tuning: test accuracy, exact sparse checkpoint bytes.
  binary DGCNN on ModelNet40 point clouds: float against a binary DGCNN
         (bit-packed deployment): test accuracy, stored bytes, and the
         Hamming-space kNN against the float kNN.
  binsage GraphSAGE on Cora against BinGraphSAGE from scratch and
         distilled from it (bit-packed deployment): test accuracy, stored
         bytes, deployed predictions against fake-quantized ones.
  lightgnn LightGCN teacher against the LightGNN student (pruned edges and
         embedding entries, 2 layers) on a Yelp subsample: test Recall@20,
         kept edges and entries, stored bytes, forward FLOPs and time.
"""
import json
import time
from typing import List, Optional, Sequence

from pyg_qgnn import cli
from pyg_qgnn.demo import binary, binsage, gnaq, lightgnn, prune, quant

#: Section name -> its module: ``add_arguments(parser)`` adds the section's
#: own flags, ``run(args)`` prints its table and returns its JSON rows.
SECTIONS = {'quant': quant, 'gnaq': gnaq, 'prune': prune, 'binary': binary,
            'binsage': binsage, 'lightgnn': lightgnn}


def section_path(path: Optional[str], section: str, sections: Sequence[str]
                 ) -> Optional[str]:
    r""":obj:`path` itself for a single section, else
    :obj:`<stem>_<section><suffix>`."""
    if path is None or len(sections) == 1:
        return path
    stem, dot, suffix = path.rpartition('.')
    return f'{stem}_{section}.{suffix}' if dot else f'{path}_{section}'


def main(args) -> List[dict]:
    if args.plot:
        cli.require_module('matplotlib', '--plot', extra='plot')
    start = time.perf_counter()
    sections = args.only or list(SECTIONS)
    args.plot_path = lambda name: section_path(args.plot, name, sections)
    rows = []
    for name in sections:
        print(f'\n## {name}\n')
        rows += SECTIONS[name].run(args)
    print(f'\n({time.perf_counter() - start:.0f} s)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=2)
        print(f'rows written to {args.json}')
    return rows


def add_arguments(parser):
    parser.add_argument('--only', nargs='+', metavar='SECTION',
                        type=cli.choice(list(SECTIONS)),
                        help=f'run only these sections, among '
                        f'{", ".join(SECTIONS)} (default: all)')
    parser.add_argument('--seeds', type=cli.positive_int, default=3,
                        help='number of seeds (default: 3)')
    parser.add_argument('--json', default=None, metavar='PATH',
                        type=cli.output_path,
                        help='write the rows of every section as one JSON '
                        'list (a missing folder is created)')
    parser.add_argument('--plot', default=None, metavar='PATH',
                        type=cli.output_path,
                        help='write each section\'s plot as a PNG (needs '
                        'matplotlib); with several sections, PATH gets the '
                        'section name before its suffix')
    parser.add_argument('--no-progress', action='store_true',
                        help='hide progress bars')
    for section in SECTIONS.values():
        section.add_arguments(parser)
