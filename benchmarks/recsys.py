r"""GNAQ recommendation costs on the Gowalla graph: training steps, stored
bytes and top-20 retrieval, each against the float LightGCN.

* ``train_step``: one step (zero_grad, forward and backward of the output
  sum) of a light graph convolution over the whole training graph, d = 64:
  :class:`QuantLGConv` propagating GNAQ's 2-bit node-aware encoding
  (:class:`NodeAwareQuantizer` input) against PyG's :class:`LGConv` on the
  float table, with an :obj:`edge_index` (message passing) and with the
  normalized adjacency as a CSR matrix; then a whole 3-layer training step,
  GNAQ's code update included, against PyG's :class:`LightGCN`.
* ``bytes``: the stored embedding table of GNAQ (packed 2-bit codes plus
  four FP8 levels per node) against float32, at d = 64, 128 and 256.
* ``infer``: top-20 items (training items left out) for 1,024 users from
  the deployed GNAQ model (embeddings recomputed once from the codes at
  load, timed separately as ``load``) against the float model's
  precomputed embeddings.

QuantLGConv backpropagates through a CSR adjacency with a cached transpose
(LGConv through torch.sparse.mm, which transposes on every step), so the
CSR cases also measure that kernel, not only quantization.

Without the shared Gowalla data a SYNTHETIC interaction graph of the same
kind is used and announced. ``--quick`` takes a 3,000-user subsample.

.. code-block:: bash

    .venv/bin/python benchmarks/recsys.py --quick
    .venv/bin/python benchmarks/recsys.py --json recsys.json
"""
import os
import sys
import time

import torch
from torch_geometric.nn import LGConv
from torch_geometric.nn.models import LightGCN
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    cli,
    Record,
    base_parser,
    finish,
    setup,
    time_fn,
    time_pair,
)

# Imported after common, which puts this checkout first on sys.path.
from pyg_qgnn.datasets import load_recsys  # noqa: E402
from pyg_qgnn.deploy import DeployedGNAQ  # noqa: E402
from pyg_qgnn.metrics import UserItems, top_k  # noqa: E402
from pyg_qgnn.nn import QuantLGConv  # noqa: E402
from pyg_qgnn.nn.models import QuantLightGCN  # noqa: E402
from pyg_qgnn.quantizers import NodeAwareQuantizer  # noqa: E402
from pyg_qgnn.train.recsys import lightgcn  # noqa: E402

BENCHMARK = 'recsys'
#: Case prefix -> smallest acceptable ratio (float time / GNAQ time).
GOALS = {'train_step': 0.67}


def parse_args():
    parser = base_parser(__doc__)
    parser.add_argument(
        '--root', type=cli.existing_dir, default=None,
        help='folder holding gowalla/ (default: $PYG_QGNN_DATA, else '
        '../shared/data, else the LightGCN download, else a SYNTHETIC '
        'stand-in)')
    parser.add_argument(
        '--users', type=cli.positive_int, default=None,
        help='users drawn from the data (default: 3000 with --quick, all '
        'otherwise)')
    parser.add_argument(
        '--retrieve-users', type=cli.positive_int, default=1024,
        help='users per top-20 retrieval (default: 1024)')
    parser.add_argument(
        '--cases', nargs='+', choices=['train_step', 'bytes', 'infer'],
        default=['train_step', 'bytes', 'infer'],
        help='what to measure (default: all)')
    return setup(parser.parse_args())


def layer_step(conv, x, adj):
    def step():
        conv.zero_grad(set_to_none=True)
        x.grad = None
        conv(x, adj).sum().backward()
    return step


def train_records(data, args):
    dim, records = 64, []
    table = torch.nn.Parameter(torch.randn(data.num_nodes, dim) * 0.1)
    csr = data.adjacency()
    edge_index = data.graph().edge_index
    for name, adj, normalize in (('coo', edge_index, True),
                                 ('csr', csr, False)):
        base = LGConv(normalize=normalize)
        twin = QuantLGConv(normalize=normalize,
                           input_quantizer=NodeAwareQuantizer(2))
        base_s, twin_s = time_pair(layer_step(base, table, adj),
                                   layer_step(twin, table, adj),
                                   args.min_run_time)
        records.append(Record.cost(BENCHMARK, f'train_step/layer_{name}',
                                   'train_step', base_s, twin_s, 's'))
    float_model = LightGCN(data.num_nodes, dim, 3, normalize=False)
    torch.nn.init.normal_(float_model.embedding.weight, std=0.1)
    gnaq = QuantLightGCN.from_float(lightgcn(data.num_users, data.num_items,
                                             dim, 3), NodeAwareQuantizer(2))

    def model_step(model, update):
        def step():
            model.zero_grad(set_to_none=True)
            model.get_embedding(csr).sum().backward()
            if update:
                model.after_step(csr)
        return step

    base_s, twin_s = time_pair(model_step(float_model, False),
                               model_step(gnaq, True), args.min_run_time)
    records.append(Record.cost(BENCHMARK, 'train_step/model_csr',
                               'train_step', base_s, twin_s, 's'))
    return records


def bytes_records(data):
    records = []
    for dim in (64, 128, 256):
        model = QuantLightGCN.from_float(
            lightgcn(data.num_users, data.num_items, dim, 3),
            NodeAwareQuantizer(2))
        deployed = DeployedGNAQ.from_trained(model.eval())
        records.append(Record.cost(BENCHMARK, f'bytes/d{dim}', 'bytes',
                                   data.num_nodes * dim * 4,
                                   deployed.embedding_nbytes(), 'B'))
    return records


def infer_records(data, args):
    gnaq = QuantLightGCN.from_float(lightgcn(data.num_users, data.num_items,
                                             64, 3), NodeAwareQuantizer(2))
    float_model = lightgcn(data.num_users, data.num_items, 64, 3).eval()
    deployed = DeployedGNAQ.from_trained(gnaq.eval())
    deployed.attach_graph(data.train, data.num_users)
    csr = data.adjacency()

    def load():
        deployed._cache = None  # what loading a checkpoint leaves
        deployed.get_embedding()

    load_s = time_fn(load, args.min_run_time)
    with torch.no_grad():
        float_out = float_model.get_embedding(csr)
    float_propagate_s = time_fn(lambda: float_model.get_embedding(csr),
                                args.min_run_time)
    records = [Record.cost(BENCHMARK, 'infer/load', 'infer',
                           float_propagate_s, load_s, 's')]
    users = torch.arange(min(args.retrieve_users, data.num_users))
    seen = UserItems(data.train, data.num_users)
    float_users = float_out[:data.num_users]
    float_items = float_out[data.num_users:]
    base_s, twin_s = time_pair(
        lambda: top_k(float_users, float_items, 20, users, seen),
        lambda: deployed.recommend(users, 20), args.min_run_time)
    records.append(Record.cost(BENCHMARK, f'infer/top20_{users.numel()}',
                               'infer', base_s, twin_s, 's'))
    return records


def goal_column(record: Record) -> str:
    goal = GOALS.get(record.metric)
    if goal is None:
        return ''
    return f'{"PASS" if record.ratio >= goal else "MISS"} (>= {goal})'


def main():
    args = parse_args()
    with cli.user_input('--root' if args.root else None):
        data = load_recsys('gowalla', args.root)
    users = args.users or (3000 if args.quick else None)
    if users is not None:
        data = data.subsample(users)
    print(f'{data.describe()}; {torch.get_num_threads()} threads; ratio = '
          f'float / GNAQ (above 1: GNAQ cheaper)\n')
    torch.manual_seed(0)
    records, start = [], time.perf_counter()
    for case in tqdm(args.cases, desc=BENCHMARK, leave=False):
        if case == 'train_step':
            records += train_records(data, args)
        elif case == 'bytes':
            records += bytes_records(data)
        else:
            records += infer_records(data, args)
    finish(records, args, extra_columns={'goal': goal_column})
    print(f'\n({time.perf_counter() - start:.0f} s)')


if __name__ == '__main__':
    sys.exit(cli.guard(main))
