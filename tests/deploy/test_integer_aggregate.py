"""Tests of the aggregation of int8 codes over a CSR graph
(pyg_qgnn.deploy.integer_aggregate) and of its native build."""
import subprocess

import pytest
import torch

from pyg_qgnn.deploy import backend as probe
from pyg_qgnn.deploy import integer_aggregate
from pyg_qgnn.deploy.backend import compile_native, native_function
from pyg_qgnn.deploy.integer_aggregate import (
    AGGREGATE_PATHS,
    aggregate_codes,
    aggregate_kernel,
)

MODES = ['sum', 'weighted', 'max']


@pytest.fixture(params=AGGREGATE_PATHS)
def path(request):
    # Built lazily, inside the test's private cache.
    if request.param == 'native' and aggregate_kernel() is None:
        pytest.skip('no C compiler (cc or $CC) builds the native kernel here')
    return request.param


@pytest.fixture
def native():
    if aggregate_kernel() is None:
        pytest.skip('no C compiler (cc or $CC) builds the native kernel here')


def random_graph(num_targets=30, num_sources=25, num_entries=150,
                 features=7, seed=0):
    r"""CSR of random entries: every third target isolated, a hub of 37
    entries (not a multiple of 4, longer than the prefetch distance),
    repeated entries and self-loops; codes over the whole int8 range."""
    gen = torch.Generator().manual_seed(seed)
    target = source = torch.zeros(0, dtype=torch.long)
    if num_entries:
        targets = torch.arange(num_targets)
        targets = targets[targets % 3 != 0]
        target = targets[torch.randint(len(targets), (num_entries,),
                                       generator=gen)]
        source = torch.randint(num_sources, (num_entries,), generator=gen)
        loops = torch.arange(1, min(num_targets, num_sources), 3)
        hub = torch.full((37,), int(targets[0]))
        target = torch.cat([target, target[:9], loops, hub])
        source = torch.cat([source, source[:9], loops,
                            torch.randint(num_sources, (37,), generator=gen)])
    target, order = target.sort(stable=True)
    col = source[order]
    rowptr = torch.zeros(num_targets + 1, dtype=torch.long)
    rowptr[1:] = torch.bincount(target, minlength=num_targets).cumsum(0)
    codes = torch.randint(-128, 128, (num_sources, features), generator=gen,
                          dtype=torch.int8)
    weight = torch.randn(col.numel(), generator=gen)
    return codes, rowptr, col, weight


def run(mode, codes, rowptr, col, weight, path):
    if mode == 'weighted':
        return aggregate_codes(codes, rowptr, col, weight, path=path)
    return aggregate_codes(codes, rowptr, col, reduce=mode, path=path)


def reference(codes, rowptr, col, weight=None, reduce='sum'):
    r"""Row by row in float64."""
    out = torch.zeros(rowptr.numel() - 1, codes.size(1), dtype=torch.float64)
    for i in range(out.size(0)):
        first, last = int(rowptr[i]), int(rowptr[i + 1])
        if first == last:
            continue
        rows = codes[col[first:last]].double()
        if reduce == 'max':
            out[i] = rows.max(dim=0).values
        else:
            factors = (torch.ones(last - first) if weight is None
                       else weight[first:last]).double()
            out[i] = (factors.view(-1, 1) * rows).sum(dim=0)
    return out


def sequential(codes, rowptr, col, weight):
    r"""The rule in float32, entry by entry: product, then sum."""
    out = torch.zeros(rowptr.numel() - 1, codes.size(1))
    for i in range(out.size(0)):
        for e in range(int(rowptr[i]), int(rowptr[i + 1])):
            product = weight[e] * codes[col[e]].float()
            out[i] = out[i] + product
    return out


def same_bits(a, b):
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == torch.float32:  # also tells -0.0 from 0.0
        return torch.equal(a.view(torch.int32), b.view(torch.int32))
    return torch.equal(a, b)


# Against the references ######################################################


def test_sum_is_exact(path):
    codes, rowptr, col, _ = random_graph()
    out = aggregate_codes(codes, rowptr, col, path=path)
    assert out.dtype == torch.int32 and out.shape == (30, 7)
    assert torch.equal(out.double(), reference(codes, rowptr, col))
    assert bool((out[::3] == 0).all())  # isolated targets
    # Sums far beyond int8 stay exact in int32.
    extreme = torch.full((3, 2), -128, dtype=torch.int8)
    star = torch.tensor([0, 300])
    out = aggregate_codes(extreme, star, torch.arange(300) % 3, path=path)
    assert out.tolist() == [[-128 * 300] * 2]


def test_max_is_exact(path):
    codes, rowptr, col, _ = random_graph(seed=1)
    out = aggregate_codes(codes, rowptr, col, reduce='max', path=path)
    assert out.dtype == torch.int32
    assert torch.equal(out.double(),
                       reference(codes, rowptr, col, reduce='max'))
    # Negative maxima stay negative; empty rows give 0.
    negative = torch.randint(-128, 0, codes.shape, dtype=torch.int8)
    out = aggregate_codes(negative, rowptr, col, reduce='max', path=path)
    nonempty = rowptr.diff() > 0
    assert bool((out[nonempty] < 0).all()) and bool((out[~nonempty] == 0)
                                                    .all())


def test_weighted_sum_is_the_row_order_rule(path):
    codes, rowptr, col, weight = random_graph(seed=2)
    out = aggregate_codes(codes, rowptr, col, weight, path=path)
    assert out.dtype == torch.float32
    assert same_bits(out, sequential(codes, rowptr, col, weight))
    expected = reference(codes, rowptr, col, weight)
    # float32 rounding, relative to the sum of the terms' magnitudes
    # (a sum that cancels keeps the error of its terms).
    magnitude = reference(codes.double().abs(), rowptr, col, weight.abs())
    assert bool(((out.double() - expected).abs()
                 <= 1e-6 * (expected.abs() + magnitude)).all())


def test_weighted_sum_rounds_in_row_order(path):
    # 2^24 + 1 rounds to 2^24 in float32: left to right, the 1 is lost.
    codes = torch.ones(1, 1, dtype=torch.int8)
    weight = torch.tensor([2.0 ** 24, 1.0, -2.0 ** 24])
    out = aggregate_codes(codes, torch.tensor([0, 3]), torch.zeros(3).long(),
                          weight, path=path)
    assert out.item() == 0.0
    out = aggregate_codes(codes, torch.tensor([0, 3]), torch.zeros(3).long(),
                          weight.flip(0).roll(1), path=path)  # 1 first
    assert out.item() == 1.0


@pytest.mark.parametrize('mode', MODES)
def test_relabelling_nodes_permutes_rows(path, mode):
    codes, rowptr, col, weight = random_graph(seed=3)
    out = run(mode, codes, rowptr, col, weight, path)
    gen = torch.Generator().manual_seed(4)
    # New source ids: codes move, the graph follows.
    sources = torch.randperm(codes.size(0), generator=gen)
    moved = torch.empty_like(codes)
    moved[sources] = codes
    assert same_bits(run(mode, moved, rowptr, sources[col], weight, path),
                     out)
    # New target order: rows move with their entries, in their order.
    targets = torch.randperm(rowptr.numel() - 1, generator=gen)
    degree = rowptr.diff()[targets]
    new_rowptr = torch.cat([torch.zeros(1).long(), degree.cumsum(0)])
    entries = torch.cat([torch.arange(rowptr[t], rowptr[t + 1])
                         for t in targets.tolist()])
    assert same_bits(run(mode, codes, new_rowptr, col[entries],
                         weight[entries], path), out[targets])


# The paths agree bit for bit #################################################


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('shape', [
    dict(features=1), dict(features=3), dict(features=257),
    dict(num_targets=600, num_entries=2000, features=5),  # many row chunks
    dict(num_targets=0, num_entries=0),
    dict(num_entries=0),
    dict(num_sources=0, num_entries=0),
    dict(features=0),
], ids=lambda shape: ','.join(f'{k}={v}' for k, v in shape.items()))
def test_native_equals_torch(native, mode, shape):
    codes, rowptr, col, weight = random_graph(**shape, seed=5)
    out = run(mode, codes, rowptr, col, weight, 'native')
    assert same_bits(out, run(mode, codes, rowptr, col, weight, 'torch'))
    assert out.shape == (rowptr.numel() - 1, codes.size(1))


@pytest.mark.parametrize('mode', MODES)
def test_native_is_independent_of_threads(native, mode):
    codes, rowptr, col, weight = random_graph(600, 50, 3000, 9, seed=6)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run(mode, codes, rowptr, col, weight, 'native')
        torch.set_num_threads(3)
        several = run(mode, codes, rowptr, col, weight, 'native')
    finally:
        torch.set_num_threads(threads)
    assert same_bits(single, several)


@pytest.mark.parametrize('mode', MODES)
def test_serial_build_gives_the_same_bits(native, mode):
    # Where the compiler has no OpenMP, the kernel is built without it.
    serial = native_function('aggregate_codes', integer_aggregate._SOURCE,
                             aggregate_kernel().argtypes,
                             ['-ffp-contract=off'])
    codes, rowptr, col, weight = random_graph(600, 50, 3000, 9, seed=7)
    dtype = torch.float32 if mode == 'weighted' else torch.int32
    out = torch.empty(600, 9, dtype=dtype)
    kernel_mode = MODES.index(mode)
    assert serial(codes.data_ptr(), rowptr.data_ptr(), col.data_ptr(),
                  weight.data_ptr(), 600, 9, kernel_mode, 2,
                  out.data_ptr()) == 0
    assert same_bits(out, run(mode, codes, rowptr, col, weight, 'native'))


@pytest.mark.parametrize('mode', MODES)
def test_torch_chunks_end_between_rows(mode, monkeypatch):
    codes, rowptr, col, weight = random_graph(seed=8)
    whole = run(mode, codes, rowptr, col, weight, 'torch')
    monkeypatch.setattr(integer_aggregate, '_CHUNK', 3 * codes.size(1))
    assert same_bits(run(mode, codes, rowptr, col, weight, 'torch'), whole)


@pytest.mark.parametrize('mode', MODES)
def test_default_path_and_non_contiguous_inputs(mode):
    codes, rowptr, col, weight = random_graph(seed=9)
    expected = run(mode, codes, rowptr, col, weight, 'torch')
    assert same_bits(run(mode, codes, rowptr, col, weight, None), expected)
    codes = codes.t().contiguous().t()
    col = torch.stack([col, col], dim=1)[:, 0]
    weight = torch.stack([weight, weight], dim=1)[:, 1]
    rowptr = torch.stack([rowptr, rowptr], dim=1)[:, 0]
    assert not (codes.is_contiguous() or col.is_contiguous()
                or weight.is_contiguous() or rowptr.is_contiguous())
    assert same_bits(run(mode, codes, rowptr, col, weight, None), expected)


def test_backend_reports_the_aggregation_path():
    found = probe()
    assert found.int8_aggregate in AGGREGATE_PATHS
    assert found.int8_aggregate == ('native' if aggregate_kernel() is not None
                                    else 'torch')


def test_openmp_build_falls_back_to_serial(monkeypatch):
    builds = []
    real_run = subprocess.run

    def no_openmp(command, **kwargs):
        builds.append(command)
        if '-fopenmp' in command:
            raise subprocess.CalledProcessError(1, command)
        return real_run(command, **kwargs)

    monkeypatch.setattr(subprocess, 'run', no_openmp)
    source = 'int answer(void) { return 42; }'
    library = compile_native('answer', source,
                             ['-fopenmp', '-ffp-contract=off'])
    if not builds:
        pytest.skip('no C compiler (cc or $CC) here')
    assert library is not None and library.answer() == 42
    assert '-fopenmp' in builds[0] and '-fopenmp' not in builds[-1]
    assert '-ffp-contract=off' in builds[-1]
    # Without extra flags, the builds are the ones of before.
    function = native_function('answer', source, [])
    assert function is not None and function() == 42
    assert builds[-1][1:3] == ['-O3', '-march=native']


# Errors ######################################################################


def test_errors_name_the_argument(monkeypatch):
    codes, rowptr, col, weight = random_graph()
    cases = [
        (dict(codes=codes.float()), TypeError, "'codes' must have dtype "
                                               "torch.int8"),
        (dict(codes=codes.tolist()), TypeError, "'codes' must be a torch"),
        (dict(codes=codes[:, 0]), ValueError, r"'codes' must have shape"),
        (dict(rowptr=rowptr.int()), TypeError, "'rowptr' must have dtype "
                                               "torch.int64"),
        (dict(rowptr=rowptr.view(1, -1)), ValueError, "'rowptr' must have "
                                                      "shape"),
        (dict(rowptr=rowptr[:0]), ValueError, "'rowptr' must hold"),
        (dict(rowptr=rowptr + 1), ValueError, "'rowptr' must start at 0"),
        (dict(rowptr=torch.cat([rowptr[:-1], rowptr[-1:] + 1])), ValueError,
         "'rowptr' must end at col.numel()"),
        (dict(rowptr=torch.cat([rowptr[:2], rowptr[1:2] - 1, rowptr[3:]])),
         ValueError, "'rowptr' must be non-decreasing"),
        (dict(col=col.int()), TypeError, "'col' must have dtype torch.int64"),
        (dict(col=col.view(-1, 1)), ValueError, "'col' must have shape"),
        (dict(col=torch.cat([col[:-1], torch.tensor([25])])), ValueError,
         r"'col' must hold source indices in \[0, 25\)"),
        (dict(col=torch.cat([torch.tensor([-1]), col[1:]])), ValueError,
         r"'col' must hold source indices .* \[-1, "),
        (dict(weight=weight.double()), TypeError, "'weight' must have dtype "
                                                  "torch.float32"),
        (dict(weight=weight[:-1]), ValueError, "'weight' must have shape"),
        (dict(weight=torch.where(col == 3, float('nan'), weight)), ValueError,
         "'weight' contains NaN or Inf"),
        (dict(weight=weight / 0), ValueError, "'weight' contains NaN or Inf"),
        (dict(reduce='mean'), ValueError, "'reduce' must be one of"),
        (dict(weight=weight, reduce='max'), ValueError,
         "'weight' must be None for reduce='max'"),
        (dict(path='gpu'), ValueError, "'path' must be None or one of"),
        (dict(rowptr=rowptr.to('meta')), ValueError,
         "'rowptr' must be on the device of 'codes'"),
    ]
    for change, error, message in cases:
        arguments = dict(codes=codes, rowptr=rowptr, col=col)
        arguments.update(change)
        with pytest.raises(error, match=message):
            aggregate_codes(**arguments)
    degree = int(rowptr.diff().max())
    monkeypatch.setattr(integer_aggregate, 'MAX_EXACT_DEGREE', degree - 1)
    with pytest.raises(ValueError, match=f"'rowptr' has a row of {degree} "
                                         f"entries"):
        aggregate_codes(codes, rowptr, col)
    aggregate_codes(codes, rowptr, col, weight)  # no int32 sum: no limit
    monkeypatch.setattr(integer_aggregate, 'aggregate_kernel', lambda: None)
    with pytest.raises(RuntimeError, match="path='native' needs a C "
                                           "compiler"):
        aggregate_codes(codes, rowptr, col, reduce='max', path='native')
