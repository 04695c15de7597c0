r"""Helpers shared by every benchmark script (see :file:`benchmarks/README.md`).

Scripts run as ``python benchmarks/<name>.py`` and import this module with
``sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))``; importing
it puts the repository root first on :obj:`sys.path`, so a benchmark always
measures the :mod:`pyg_qgnn` of the checkout it sits in.
"""
import argparse
import json
import os
import statistics
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils import benchmark

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from pyg_qgnn import cli  # noqa: E402  (after the path set-up above)

#: Extra table columns: header -> cell text of a record.
Columns = Dict[str, Callable[['Record'], str]]


@dataclass
class Record:
    r"""One comparison of a candidate (:obj:`value`) with its baseline.

    :obj:`ratio` is oriented so that above :obj:`1` always means the
    candidate is better: build records with :meth:`cost` for times and
    bytes (lower is better) and :meth:`rate` for throughputs (higher is
    better) rather than by hand.
    """
    benchmark: str
    case: str
    metric: str
    baseline: float
    value: float
    ratio: float
    unit: str

    @classmethod
    def cost(cls, benchmark: str, case: str, metric: str, baseline: float,
             value: float, unit: str) -> 'Record':
        r"""A lower-is-better metric: :obj:`ratio = baseline / value`."""
        return cls(benchmark, case, metric, baseline, value, baseline / value,
                   unit)

    @classmethod
    def rate(cls, benchmark: str, case: str, metric: str, baseline: float,
             value: float, unit: str) -> 'Record':
        r"""A higher-is-better metric: :obj:`ratio = value / baseline`."""
        return cls(benchmark, case, metric, baseline, value, value / baseline,
                   unit)


#: What every benchmark table's columns mean, for --help and the README.
COLUMNS_HELP = """\
columns of the table (and fields of the --json records):
  case      what was measured (layer, graph size, setting)
  metric    the quantity: train_step / infer (seconds), bytes, edges_per_s, ...
  baseline  the reference measurement: the PyTorch Geometric layer or the
            float32 model
  value     the pyg_qgnn measurement (quantized, binary or deployed form)
  ratio     oriented so that above 1 means pyg_qgnn is better:
            baseline / value for times and bytes, value / baseline for rates
  unit      unit of baseline and value
  goal      (where a script sets one) PASS or MISS against the smallest
            acceptable ratio, shown as (>= goal)
"""


def base_parser(description: str) -> argparse.ArgumentParser:
    r"""The flags every benchmark script accepts; scripts add their own.

    The parser follows :mod:`pyg_qgnn.cli`: arguments are checked when
    parsed, and errors are one line with exit status 2."""
    parser = cli.make_parser(description, epilog=COLUMNS_HELP)
    parser.add_argument(
        '--quick', action='store_true',
        help='small inputs and short timings: finishes in under a minute on '
        '2 CPU cores (smoke test, not a measurement to quote)')
    parser.add_argument(
        '--json', metavar='PATH', default=None, type=cli.output_path,
        help='also write the records as a JSON list to PATH (a missing '
        'folder is created)')
    parser.add_argument(
        '--threads', type=cli.positive_int, default=None,
        help='torch.set_num_threads(THREADS) before timing '
        '(default: leave PyTorch\'s choice)')
    parser.add_argument(
        '--min-run-time', type=cli.positive_float, default=None,
        help='seconds of repeated runs behind each median '
        '(default: 0.5 with --quick, 3.0 otherwise)')
    return parser


def setup(args: argparse.Namespace) -> argparse.Namespace:
    r"""Applies the shared flags: thread count and the default
    :obj:`--min-run-time`."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.min_run_time is None:
        args.min_run_time = 0.5 if args.quick else 3.0
    return args


def _measure(fn: Callable[[], object], min_run_time: float) -> List[float]:
    # Timer defaults to one thread; measure with the threads torch uses.
    timer = benchmark.Timer(stmt='fn()', globals={'fn': fn},
                            num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).times


def time_fn(fn: Callable[[], object], min_run_time: float) -> float:
    r"""Median seconds per call of :obj:`fn`, by
    :meth:`torch.utils.benchmark.Timer.blocked_autorange`.

    :obj:`fn` runs once untimed first, so lazily built state (quantizer
    ranges, caches) is not charged to the measurement.
    """
    fn()
    return statistics.median(_measure(fn, min_run_time))


def time_pair(baseline_fn: Callable[[], object],
              candidate_fn: Callable[[], object], min_run_time: float,
              rounds: int = 3) -> Tuple[float, float]:
    r"""Median seconds per call of :obj:`baseline_fn` and of
    :obj:`candidate_fn`, each timed for about :obj:`min_run_time` seconds in
    all.

    The two alternate over :obj:`rounds` rounds, so a change in machine load
    during the run falls on both rather than skewing their ratio.
    """
    baseline_fn()
    candidate_fn()
    baseline_times, candidate_times = [], []
    for _ in range(rounds):
        baseline_times += _measure(baseline_fn, min_run_time / rounds)
        candidate_times += _measure(candidate_fn, min_run_time / rounds)
    return (statistics.median(baseline_times),
            statistics.median(candidate_times))


def random_graph(num_nodes: int, num_edges: int, num_features: int,
                 seed: int = 0) -> Tuple[Tensor, Tensor]:
    r"""Standard-normal node features :obj:`(num_nodes, num_features)` and
    :obj:`num_edges` uniformly drawn directed edges :obj:`(2, num_edges)`,
    reproducible from :obj:`seed`."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, num_features, generator=generator)
    edge_index = torch.randint(num_nodes, (2, num_edges), generator=generator)
    return x, edge_index


Forward = Callable[[nn.Module, Tensor, Tensor], Tensor]


def call_layer(layer: nn.Module, x: Tensor, edge_index: Tensor) -> Tensor:
    r"""The plain call :obj:`layer(x, edge_index)`."""
    return layer(x, edge_index)


def train_step(layer: nn.Module, x: Tensor, edge_index: Tensor,
               forward: Forward = call_layer) -> Callable[[], None]:
    r"""One training step of :obj:`layer` in training mode: gradients reset,
    forward, backward of the output sum. No optimizer step, so parameters
    (and the ranges derived from them) stay fixed across repetitions."""
    layer.train()

    def step():
        layer.zero_grad(set_to_none=True)
        forward(layer, x, edge_index).sum().backward()

    return step


def inference_step(layer: nn.Module, x: Tensor, edge_index: Tensor,
                   forward: Forward = call_layer) -> Callable[[], None]:
    r"""One forward pass of :obj:`layer` in evaluation mode under
    :func:`torch.inference_mode`."""
    layer.eval()

    def step():
        with torch.inference_mode():
            forward(layer, x, edge_index)

    return step


def add_random_graph_arguments(parser: argparse.ArgumentParser, what: str,
                               channels: int):
    r"""The options of a random-graph benchmark: :obj:`--nodes`,
    :obj:`--edges`, :obj:`--features` and :obj:`--hidden` (both
    :obj:`channels` by default); :obj:`what` names the graph's models in
    the help. :func:`random_graph_sizes` fills in the defaults."""
    parser.add_argument(
        '--nodes', type=cli.positive_int, default=None,
        help='nodes of the random graph (default: 100000; --quick: 10000)')
    parser.add_argument(
        '--edges', type=cli.positive_int, default=None,
        help='edges of the random graph (default: 10 per node)')
    parser.add_argument(
        '--features', type=cli.positive_int, default=channels,
        help=f'input features of {what} (default: {channels})')
    parser.add_argument(
        '--hidden', type=cli.positive_int, default=channels,
        help=f'hidden channels of {what} (default: {channels})')


def random_graph_sizes(args: argparse.Namespace) -> argparse.Namespace:
    r"""The default :obj:`--nodes` (100,000; 10,000 with :obj:`--quick`)
    and :obj:`--edges` (10 per node) of :func:`add_random_graph_arguments`."""
    if args.nodes is None:
        args.nodes = 10_000 if args.quick else 100_000
    if args.edges is None:
        args.edges = 10 * args.nodes
    return args


def graph_adjacency(edge_index: Tensor, num_nodes: int):
    r"""The transposed adjacency PyG layers take fastest: a
    :class:`torch_sparse.SparseTensor` if installed, else a
    :obj:`torch.sparse` CSR tensor."""
    from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor
    from torch_geometric.utils import to_torch_csr_tensor

    if WITH_TORCH_SPARSE:
        return SparseTensor.from_edge_index(
            edge_index, sparse_sizes=(num_nodes, num_nodes)).t()
    return to_torch_csr_tensor(edge_index.flip(0), size=(num_nodes, num_nodes))


def bf16_forward(model: nn.Module, x: Tensor, adj) -> Tensor:
    r"""A forward pass under :obj:`torch.autocast('cpu', bfloat16)`."""
    with torch.autocast('cpu', dtype=torch.bfloat16):
        return model(x, adj)


def deployed_infer_records(benchmark_name: str, case: str,
                           float_model: nn.Module, deployed: nn.Module,
                           x: Tensor, adj, min_run_time: float,
                           bf16: bool = True) -> List['Record']:
    r"""Full-graph inference of :obj:`deployed` (value) against
    :obj:`float_model` in float32 (case :obj:`case`) and, with
    :obj:`bf16`, under bfloat16 autocast (case :obj:`{case}_bf16`; skipped,
    with the reason printed, where the adjacency has no bfloat16 CPU
    kernel)."""
    from tqdm import tqdm

    candidate = inference_step(deployed, x, adj)
    baseline, value = time_pair(inference_step(float_model, x, adj),
                                candidate, min_run_time)
    records = [Record.cost(benchmark_name, case, 'infer', baseline, value,
                           's')]
    if not bf16:
        return records
    bf16_step = inference_step(float_model, x, adj, bf16_forward)
    try:
        bf16_step()
    except (RuntimeError, NotImplementedError) as error:
        # torch.sparse CSR products have no bfloat16 kernel on the CPU.
        tqdm.write(f'skipped {case}_bf16: the float model does not run '
                   f'under bfloat16 autocast on this adjacency ({error})')
        return records
    baseline, value = time_pair(bf16_step, candidate, min_run_time)
    records.append(Record.cost(benchmark_name, f'{case}_bf16', 'infer',
                               baseline, value, 's'))
    return records


def count_name(n: int) -> str:
    r"""A count as cases name it: :obj:`100000 -> "100k"`,
    :obj:`1000000 -> "1m"`."""
    for factor, suffix in ((1_000_000, 'm'), (1_000, 'k')):
        if n % factor == 0:
            return f'{n // factor}{suffix}'
    return str(n)


def print_table(records: Iterable[Record],
                extra_columns: Optional[Columns] = None):
    r"""Prints :obj:`records` as a markdown table, with optional extra
    columns computed from each record."""
    records = list(records)
    extra_columns = extra_columns or {}
    # The benchmark name heads the table instead of filling a column.
    benchmarks = dict.fromkeys(record.benchmark for record in records)
    print(f'### {", ".join(benchmarks)}\n')
    header = [f.name for f in fields(Record) if f.name != 'benchmark']
    rows = []
    for record in records:
        cells = [_cell(getattr(record, name)) for name in header]
        cells += [cell(record) for cell in extra_columns.values()]
        rows.append(cells)
    header += list(extra_columns)
    widths = [max([len(h)] + [len(row[i]) for row in rows])
              for i, h in enumerate(header)]
    print('| ' + ' | '.join(h.ljust(w) for h, w in zip(header, widths)) + ' |')
    print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    for row in rows:
        print('| ' + ' | '.join(c.ljust(w) for c, w in zip(row, widths))
              + ' |')


def _cell(value) -> str:
    if isinstance(value, float):
        return f'{value:.4g}' if abs(value) >= 1e-3 else f'{value:.3e}'
    return str(value)


def write_json(records: Iterable[Record], path: str):
    r"""Writes :obj:`records` to :obj:`path` as a JSON list of objects."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, 'w') as f:
        json.dump([asdict(record) for record in records], f, indent=2)
        f.write('\n')


def finish(records: List[Record], args: argparse.Namespace,
           extra_columns: Optional[Columns] = None):
    r"""Prints the table and, with :obj:`--json`, writes the records."""
    print_table(records, extra_columns)
    if args.json is not None:
        write_json(records, args.json)
        print(f'\nwrote {len(records)} records to {args.json}')
