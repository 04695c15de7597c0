r"""LightGNN pruning costs on a recommendation graph: the float LightGCN
teacher (3 layers, every training edge, the whole float32 table) against
the deployed pruned student (:class:`DeployedLightGNN`: 2 layers, 44% of
the edges, 33% of the embedding entries).

* ``infer``: ``infer/forward``, the final embeddings of all nodes from
  operands prepared once (normalized graph and layer-0 table, as a server
  holds them after loading; ``forward_call`` of the LightGNN pipeline);
  ``infer/rank_all_top20``, that forward plus scoring every user against
  every item and the top 20 of each, training items left out
  (``pyg_qgnn.metrics.top_k``).
* ``flops``: ``flops/forward``, floating-point operations of that forward
  (``lightgcn_forward_flops`` against ``DeployedLightGNN.forward_flops``);
  ``flops/rank_all``, plus the 2 U I d of scoring all pairs (the same on
  both sides: the propagated embeddings are dense).
* ``bytes``: ``bytes/model``, what each stores (teacher: float32 table plus
  its graph as a user-sorted CSR, ``lightgcn_nbytes``; student: the
  buffers of the deployed model, ``deploy.nbytes``); ``bytes/file``, the
  safetensors file ``DeployedLightGNN.save`` writes against one holding
  the teacher's table and CSR graph.

The student is built WITHOUT training (costs, not accuracy): a LightGNN on
the training pairs starting from the teacher's table (random, or trained
with ``--pretrained``) and the pipeline's defaults (``LightGNNConfig``:
Eq. 4's residual term or not, pruning scopes and scores, edge value
precision), its edges pruned once to ``--edge-keep`` by the decision
weight of Eq. 8 with the teacher's standardized predictions (w = 1
untrained) and its entries to ``--emb-keep`` (``prune_pairs`` /
``prune_entries``). Sizes
and FLOPs depend only on the kept counts, so trained masks of the same
shares give the same; times differ only by where the kept edges fall.

Without the shared data a SYNTHETIC interaction graph is used and
announced. ``--quick`` takes a 3,000-user subsample.

.. code-block:: bash

    .venv/bin/python benchmarks/pruning.py --quick
    .venv/bin/python benchmarks/pruning.py --dataset lightgnn_yelp \
        --json pruning.json
"""
import os
import sys
import tempfile
import time

import torch
from safetensors.torch import save as to_bytes
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    Record,
    base_parser,
    cli,
    finish,
    setup,
    time_pair,
)

# Imported after common, which puts this checkout first on sys.path.
from pyg_qgnn.datasets import load_recsys  # noqa: E402
from pyg_qgnn.deploy import nbytes  # noqa: E402
from pyg_qgnn.deploy.lightgnn import (  # noqa: E402
    DeployedLightGNN,
    item_dtype,
)
from pyg_qgnn.distill.lightgnn import importance_scores  # noqa: E402
from pyg_qgnn.metrics import UserItems, top_k  # noqa: E402
from pyg_qgnn.nn.models.lightgnn import lightgcn_forward_flops  # noqa: E402
from pyg_qgnn.prune.lightgnn import (  # noqa: E402
    prune_entries,
    prune_pairs,
    teacher_edge_terms,
)
from pyg_qgnn.train.lightgnn import (  # noqa: E402
    LightGNNConfig,
    lightgnn_embeddings,
)
from pyg_qgnn.train.lightgnn_pipeline import (  # noqa: E402
    build_lightgnn,
    forward_call,
    lightgcn_nbytes,
)
from pyg_qgnn.train.recsys import lightgcn, load_pretrained  # noqa: E402

BENCHMARK = 'pruning'
CASES = ['infer', 'flops', 'bytes']
K = 20


def parse_args():
    parser = base_parser(__doc__)
    parser.add_argument(
        '--dataset', default='gowalla',
        help='dataset folder name: LightGCN text format (gowalla, '
        'yelp2018, amazon-book) or LightGNN pickles (lightgnn_yelp) '
        '(default: gowalla)')
    parser.add_argument(
        '--root', type=cli.existing_dir, default=None,
        help='folder holding <dataset>/ (default: $PYG_QGNN_DATA, else '
        '../shared/data, else the LightGCN download, else a SYNTHETIC '
        'stand-in)')
    parser.add_argument(
        '--users', type=cli.positive_int, default=None,
        help='users drawn from the data (default: 3000 with --quick, all '
        'otherwise)')
    parser.add_argument(
        '--dim', type=cli.positive_int, default=64,
        help='embedding dimension d (default: 64)')
    parser.add_argument(
        '--teacher-layers', type=cli.positive_int, default=3,
        help='LightGCN teacher layers (default: 3)')
    parser.add_argument(
        '--student-layers', type=cli.nonnegative_int, default=2,
        help='student layers (default: 2)')
    parser.add_argument(
        '--edge-keep', type=cli.share, default=0.44,
        help='share of training edges the student keeps (default: 0.44)')
    parser.add_argument(
        '--emb-keep', type=cli.share, default=0.33,
        help='share of embedding entries the student keeps (default: 0.33)')
    parser.add_argument(
        '--pretrained', type=cli.existing_path, default=None,
        help='the teacher saved by examples/recsys_lightgnn.py '
        '--save-pretrained (for the same data) instead of a random table')
    parser.add_argument(
        '--cases', nargs='+', type=cli.choice(CASES), default=CASES,
        help=f'what to measure, among {", ".join(CASES)} (default: all)')
    return setup(parser.parse_args())


def build_teacher(data, args):
    if args.pretrained is None:
        torch.manual_seed(0)
        return lightgcn(data.num_users, data.num_items, args.dim,
                        args.teacher_layers).eval()
    with cli.user_input('--pretrained'):
        teacher = load_pretrained(args.pretrained, data, args.dim)
    if teacher.num_layers != args.teacher_layers:
        raise cli.UserError(f'argument --pretrained: the saved teacher has '
                            f'{teacher.num_layers} layers, not '
                            f'--teacher-layers {args.teacher_layers}')
    return teacher.eval()


@torch.no_grad()
def build_student(data, teacher, args) -> DeployedLightGNN:
    r"""The untrained pruned student, deployed (see the module
    docstring)."""
    config = LightGNNConfig()
    student = build_lightgnn(data, data.train, teacher,
                             args.student_layers, residual=config.residual,
                             edge_value_dtype=config.edge_value_dtype)
    teacher_emb = torch.cat(lightgnn_embeddings(teacher, data))
    _, score = teacher_edge_terms(student, teacher, teacher_emb)
    prune_pairs(student, args.edge_keep, importance_scores(
        student.edge_weight, None, score,
        standardize=config.standardize_importance), scope=config.edge_scope)
    prune_entries(student, args.emb_keep, config.entry_score,
                  scope=config.entry_scope)
    return DeployedLightGNN.from_trained(student.eval())


def infer_records(data, teacher, deployed, args):
    teacher_forward = forward_call(teacher, data)
    student_forward = forward_call(deployed, data)
    records = []
    base_s, value_s = time_pair(teacher_forward, student_forward,
                                args.min_run_time)
    records.append(Record.cost(BENCHMARK, 'infer/forward', 'infer', base_s,
                               value_s, 's'))
    seen = UserItems(data.train, data.num_users)  # prepared once, as well
    U = data.num_users

    def rank_all(forward):
        def call():
            out = forward()
            return top_k(out[:U], out[U:], K, None, seen)
        return call

    base_s, value_s = time_pair(rank_all(teacher_forward),
                                rank_all(student_forward), args.min_run_time)
    records.append(Record.cost(BENCHMARK, f'infer/rank_all_top{K}', 'infer',
                               base_s, value_s, 's'))
    return records


def flops_records(data, deployed, args):
    teacher = lightgcn_forward_flops(data.num_nodes, 2 * data.train.size(1),
                                     args.dim, args.teacher_layers)
    student = deployed.forward_flops()
    scoring = 2 * data.num_users * data.num_items * args.dim
    return [Record.cost(BENCHMARK, 'flops/forward', 'flops', teacher,
                        student, 'FLOP'),
            Record.cost(BENCHMARK, 'flops/rank_all', 'flops',
                        teacher + scoring, student + scoring, 'FLOP')]


def teacher_file_bytes(data, teacher) -> int:
    r"""The teacher as :class:`DeployedLightGNN` would store it: its float32
    table and its training graph as a user-sorted CSR (no edge values:
    LightGCN derives them from the degrees)."""
    pairs = data.train
    order = torch.argsort(pairs[0] * data.num_items + pairs[1])
    tensors = {
        'embedding': teacher.embedding.weight.detach().float().contiguous(),
        'alpha': teacher.alpha.detach().float().contiguous(),
        'user_counts': torch.bincount(
            pairs[0], minlength=data.num_users).to(torch.int32),
        'user_items': pairs[1, order].to(item_dtype(data.num_items)),
    }
    return len(to_bytes(tensors, metadata=dict(
        num_users=str(data.num_users), num_items=str(data.num_items))))


def bytes_records(data, teacher, deployed, args):
    model = lightgcn_nbytes(data.num_users, data.num_items, args.dim,
                            data.train.size(1))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'student.safetensors')
        written = deployed.save(path)
        assert written == os.path.getsize(path)
    return [Record.cost(BENCHMARK, 'bytes/model', 'bytes', model,
                        nbytes(deployed), 'B'),
            Record.cost(BENCHMARK, 'bytes/file', 'bytes',
                        teacher_file_bytes(data, teacher), written, 'B')]


def main():
    args = parse_args()
    with cli.user_input('--root' if args.root else '--dataset'):
        data = load_recsys(args.dataset, args.root)
    users = args.users or (3000 if args.quick else None)
    if users is not None:
        data = data.subsample(users)
    teacher = build_teacher(data, args)
    deployed = build_student(data, teacher, args)
    edges, entries = data.train.size(1), data.num_nodes * args.dim
    kept, kept_entries = (deployed.user_items.numel(),
                          deployed.entry_values.numel())
    table = f'from {args.pretrained}' if args.pretrained else 'random'
    print(f'{data.describe()}; {torch.get_num_threads()} threads\n'
          f'teacher: LightGCN, {args.teacher_layers} layers, {edges:,} '
          f'edges, {entries:,} float32 entries ({table}); student: '
          f'DeployedLightGNN, {args.student_layers} layers, {kept:,} edges '
          f'({kept / edges:.0%}), {kept_entries:,} entries '
          f'({kept_entries / entries:.0%}), untrained masks; d = {args.dim}\n'
          f'ratio = teacher / student (above 1: the student is cheaper)\n')
    records, start = [], time.perf_counter()
    for case in tqdm(args.cases, desc=BENCHMARK, leave=False):
        if case == 'infer':
            records += infer_records(data, teacher, deployed, args)
        elif case == 'flops':
            records += flops_records(data, deployed, args)
        else:
            records += bytes_records(data, teacher, deployed, args)
    finish(records, args)
    print(f'\n({time.perf_counter() - start:.0f} s)')


if __name__ == '__main__':
    sys.exit(cli.guard(main))
