r"""Throughput of each PyG layer against its :mod:`pyg_qgnn` twin, in
training (forward and backward, fake quantization) and in inference
(the deployed form where one exists, else the twin in evaluation mode).

Each layer is one :class:`LayerEntry` of :data:`REGISTRY`; a new quantized
layer joins the comparison by appending its entry there.

.. code-block:: bash

    .venv/bin/python benchmarks/layer_throughput.py --quick
    .venv/bin/python benchmarks/layer_throughput.py --layers GCNConv \
        --sizes 10000:100000 100000:1000000 --json layer_throughput.json
"""
import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn
from torch_geometric.nn import GATConv, GCNConv, GINConv, SAGEConv
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    cli,
    Forward,
    Record,
    base_parser,
    call_layer,
    finish,
    inference_step,
    random_graph,
    setup,
    time_pair,
    train_step,
)

# Imported after common, which puts this checkout first on sys.path.
from pyg_qgnn import QAT, deploy, quantize_model  # noqa: E402

BENCHMARK = 'layer_throughput'


@dataclass
class LayerEntry:
    r"""A PyG layer and its :mod:`pyg_qgnn` counterparts.

    Args:
        name (str): Selects the entry with :obj:`--layers`; starts its cases.
        make_float (callable): :obj:`features -> layer`, the PyG float layer
            mapping :obj:`features` channels to :obj:`features` channels.
        make_twin (callable): :obj:`float_layer -> twin`, the quantized twin
            with the float layer's weights, trained with fake quantization.
        make_deployed (callable, optional): :obj:`twin -> module`, the form
            that ships for inference, built from a twin whose ranges are
            calibrated; without it the twin itself is timed in evaluation
            mode. (default: :obj:`None`)
        forward (callable, optional): :obj:`(layer, x, edge_index) -> out`,
            how to call any of the three. (default: :obj:`layer(x,
            edge_index)`)
    """
    name: str
    make_float: Callable[[int], nn.Module]
    make_twin: Callable[[nn.Module], nn.Module]
    make_deployed: Optional[Callable[[nn.Module], nn.Module]] = None
    forward: Forward = call_layer


def deployed_form(twin: nn.Module) -> nn.Module:
    r"""What ships: :func:`pyg_qgnn.deploy.convert` of the calibrated twin
    in evaluation mode (integer or binary codes and kernels)."""
    return deploy.convert(twin.eval())


REGISTRY: List[LayerEntry] = [
    LayerEntry(
        name='GCNConv',
        make_float=lambda features: GCNConv(features, features),
        make_twin=lambda layer: quantize_model(layer, QAT(bits=8)),
        make_deployed=deployed_form,
    ),
    LayerEntry(
        name='GINConv',
        make_float=lambda features: GINConv(nn.Sequential(
            nn.Linear(features, features), nn.ReLU(),
            nn.Linear(features, features))),
        # Inside a model, as GIN uses it, so that its network is quantized.
        make_twin=lambda layer: quantize_model(nn.ModuleList([layer]),
                                               QAT(bits=8))[0],
        make_deployed=deployed_form,
    ),
    LayerEntry(
        name='SAGEConv',
        make_float=lambda features: SAGEConv(features, features),
        make_twin=lambda layer: quantize_model(layer, QAT(bits=8)),
        make_deployed=deployed_form,
    ),
    LayerEntry(
        name='GATConv',
        make_float=lambda features: GATConv(features, features // 4, heads=4),
        make_twin=lambda layer: quantize_model(layer, QAT(bits=8)),
        make_deployed=deployed_form,
    ),
]

# GNAQ: QuantLGConv propagating the 2-bit node-aware encoding E' of a
# NodeAwareQuantizer on its input.
from torch_geometric.nn import LGConv  # noqa: E402
from pyg_qgnn.nn import QuantLGConv  # noqa: E402
from pyg_qgnn.quantizers import NodeAwareQuantizer  # noqa: E402



def embedding_forward(layer, x, edge_index):
    # LGConv has no weights: LightGCN trains its input, the embedding table.
    if layer.training and not x.requires_grad:
        x.requires_grad_()
    return layer(x, edge_index)


REGISTRY.append(LayerEntry(
    name='LGConv',
    make_float=lambda features: LGConv(),
    make_twin=lambda layer: QuantLGConv.from_float(
        layer, input=NodeAwareQuantizer(2)),
    forward=embedding_forward,
))

# Binary edge convolutions (Bahri et al., 2021) against EdgeConv with the
# float DGCNN block: same weight, binarized (BinEdgeConv: real node
# features; XorEdgeConv: binary node features, XOR edge features). The
# deployed form computes with packed bits and integer products.
from torch_geometric.nn import EdgeConv  # noqa: E402
from pyg_qgnn.nn import BinEdgeConv, XorEdgeConv  # noqa: E402


def float_edge_conv(features: int) -> EdgeConv:
    return EdgeConv(nn.Sequential(nn.Linear(2 * features, features,
                                            bias=False),
                                  nn.BatchNorm1d(features),
                                  nn.LeakyReLU(negative_slope=0.2)))


def binary_twin(cls):
    def make(layer: EdgeConv) -> nn.Module:
        linear = layer.nn[0]
        twin = cls(linear.in_features // 2, linear.out_features)
        with torch.no_grad():
            twin.nn.weight.copy_(linear.weight)
        return twin
    return make


for cls in (BinEdgeConv, XorEdgeConv):
    REGISTRY.append(LayerEntry(
        name=cls.__name__,
        make_float=float_edge_conv,
        make_twin=binary_twin(cls),
        make_deployed=deployed_form,
    ))

# BinSAGE (Bahri et al., 2021) against SAGEConv, with its weights as the
# latent weights: batch norm and sign of [x_i || mean x_j], binary weights.
# The deployed form folds the sign into thresholds, packs the weights and
# multiplies the signs with integer products.
from pyg_qgnn import Binary  # noqa: E402

REGISTRY.append(LayerEntry(
    name='BinSAGEConv',
    make_float=lambda features: SAGEConv(features, features),
    # A layer alone is its model's first: binarize its input all the same.
    make_twin=lambda layer: quantize_model(
        layer, Binary(keep_first_input_real=False)),
    make_deployed=deployed_form,
))

QUICK_SIZES = ['1000:10000', '10000:100000']
FULL_SIZES = ['10000:100000', '100000:1000000']


def graph_size(text: str) -> Tuple[int, int]:
    r"""Parses :obj:`"NODES:EDGES"` (as given to :obj:`--sizes`)."""
    try:
        nodes, edges = (int(part) for part in text.split(':'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NODES:EDGES such as 10000:100000 (got {text!r})")
    if nodes < 1 or edges < 1:
        raise argparse.ArgumentTypeError(
            f"NODES and EDGES must be positive (got {text!r})")
    return nodes, edges


def parse_args():
    parser = base_parser(__doc__)
    names = [entry.name for entry in REGISTRY]
    parser.add_argument(
        '--layers', nargs='+', metavar='NAME', choices=names, default=names,
        help=f'registry entries to compare, among {", ".join(names)} '
        f'(default: all)')
    parser.add_argument(
        '--sizes', nargs='+', type=graph_size, metavar='NODES:EDGES',
        default=None,
        help=f'random graphs to run on (default: {" ".join(QUICK_SIZES)} '
        f'with --quick, {" ".join(FULL_SIZES)} otherwise)')
    parser.add_argument(
        '--features', type=cli.positive_int, default=128,
        help='input and output channels of every layer (default: 128)')
    args = setup(parser.parse_args())
    if args.sizes is None:
        args.sizes = [graph_size(size)
                      for size in (QUICK_SIZES if args.quick else FULL_SIZES)]
    return args


def compare(entry: LayerEntry, num_nodes: int, num_edges: int,
            args: argparse.Namespace) -> List[Record]:
    r"""Training and inference records of :obj:`entry` on one graph."""
    x, edge_index = random_graph(num_nodes, num_edges, args.features)
    torch.manual_seed(0)
    float_layer = entry.make_float(args.features)
    twin = entry.make_twin(float_layer)
    case = f'{entry.name}/{num_nodes}x{num_edges}'

    float_s, twin_s = time_pair(
        train_step(float_layer, x, edge_index, entry.forward),
        train_step(twin, x, edge_index, entry.forward), args.min_run_time)
    records = [Record.rate(BENCHMARK, f'{case}/train', 'edges_per_s',
                           num_edges / float_s, num_edges / twin_s,
                           'edges/s')]

    # The training steps above have calibrated the twin's ranges.
    deployed = twin if entry.make_deployed is None else \
        entry.make_deployed(twin)
    float_s, twin_s = time_pair(
        inference_step(float_layer, x, edge_index, entry.forward),
        inference_step(deployed, x, edge_index, entry.forward),
        args.min_run_time)
    records.append(Record.rate(BENCHMARK, f'{case}/inference', 'edges_per_s',
                               num_edges / float_s, num_edges / twin_s,
                               'edges/s'))
    return records


def twin_form(record: Record) -> str:
    r"""Which form of the twin a record timed."""
    name, _, mode = record.case.split('/')
    entry = next(entry for entry in REGISTRY if entry.name == name)
    if mode == 'train':
        return 'fake-quant, train'
    return 'fake-quant, eval' if entry.make_deployed is None else 'deployed'


def main():
    args = parse_args()
    entries = [entry for entry in REGISTRY if entry.name in args.layers]
    print(f'{args.features} features, {torch.get_num_threads()} threads; '
          f'ratio = twin / float throughput (above 1: twin faster)\n')
    records = []
    runs = [(entry, size) for entry in entries for size in args.sizes]
    for entry, (num_nodes, num_edges) in tqdm(runs, desc=BENCHMARK,
                                              leave=False):
        records += compare(entry, num_nodes, num_edges, args)
    finish(records, args, extra_columns={'twin form': twin_form})


if __name__ == '__main__':
    sys.exit(cli.guard(main))
