"""Tests of the aggregation of int8 codes over a CSR graph
(pyg_qgnn.deploy.integer_aggregate) and of its native build: exact int32
sums and maxima; weighted sums and means (codes shifted by an offset) whose
float32 products are summed in float64 in the order of each row and rounded
once; the paths agree bit for bit."""
import math
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

MODES = ['sum', 'weighted', 'offset', 'mean', 'max']
#: Weighted modes -> (reduce, offset): an offset is -z for a zero point z.
WEIGHTED = {'weighted': ('sum', 0), 'offset': ('sum', 37),
            'mean': ('mean', -19)}
#: Mode -> the kernel's mode number.
KERNEL_MODES = {'sum': integer_aggregate._SUM,
                'weighted': integer_aggregate._WEIGHTED_SUM,
                'offset': integer_aggregate._WEIGHTED_SUM,
                'mean': integer_aggregate._WEIGHTED_MEAN,
                'max': integer_aggregate._MAX}


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
    if mode in WEIGHTED:
        reduce, offset = WEIGHTED[mode]
        return aggregate_codes(codes, rowptr, col, weight, reduce, path,
                               offset=offset)
    return aggregate_codes(codes, rowptr, col, reduce=mode, path=path)


def reference(codes, rowptr, col, weight=None, reduce='sum', offset=0):
    r"""Row by row in float64, products exact."""
    out = torch.zeros(rowptr.numel() - 1, codes.size(1), dtype=torch.float64)
    for i in range(out.size(0)):
        first, last = int(rowptr[i]), int(rowptr[i + 1])
        if first == last:
            continue
        rows = codes[col[first:last]].double() + offset
        if reduce == 'max':
            out[i] = rows.max(dim=0).values
            continue
        factors = (torch.ones(last - first) if weight is None
                   else weight[first:last]).double()
        out[i] = (factors.view(-1, 1) * rows).sum(dim=0)
        if reduce == 'mean':
            out[i] /= last - first
    return out


def sequential(codes, rowptr, col, weight, reduce='sum', offset=0):
    r"""The rule, entry by entry: each product w (c + o) rounded to
    float32, the products added to a float64 sum in the order of the row,
    divided by the degree for a mean, rounded once to float32."""
    out = torch.zeros(rowptr.numel() - 1, codes.size(1))
    for i in range(out.size(0)):
        first, last = int(rowptr[i]), int(rowptr[i + 1])
        total = torch.zeros(codes.size(1), dtype=torch.float64)
        for e in range(first, last):
            product = weight[e] * (codes[col[e]].float() + offset)
            assert product.dtype == torch.float32
            total = total + product.double()
        if reduce == 'mean' and last > first:
            total = total / (last - first)
        out[i] = total.float()
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


@pytest.mark.parametrize('mode', list(WEIGHTED))
def test_weighted_sum_is_the_row_order_rule(path, mode):
    reduce, offset = WEIGHTED[mode]
    codes, rowptr, col, weight = random_graph(seed=2)
    out = run(mode, codes, rowptr, col, weight, path)
    assert out.dtype == torch.float32 and out.shape == (30, 7)
    assert same_bits(out, sequential(codes, rowptr, col, weight, reduce,
                                     offset))
    # Rows without entries give 0, whatever the offset.
    assert same_bits(out[::3], torch.zeros(10, 7))
    expected = reference(codes, rowptr, col, weight, reduce, offset)
    # float32 rounding of each product and of the result, relative to the
    # sum of the terms' magnitudes (a sum that cancels keeps the error of
    # its terms).
    magnitude = reference((codes.double() + offset).abs(), rowptr, col,
                          weight.abs(), reduce)
    assert bool(((out.double() - expected).abs()
                 <= 1e-6 * (expected.abs() + magnitude)).all())


def aggregate_one_row(codes, weight, path, reduce='sum', offset=0):
    r"""The weighted aggregation of one target over the entries
    :obj:`weight` (float factors), all from source 0 with :obj:`codes`."""
    codes = torch.tensor([codes], dtype=torch.int8).view(1, -1)
    weight = torch.tensor(weight, dtype=torch.float32)
    rowptr = torch.tensor([0, weight.numel()])
    col = torch.zeros(weight.numel(), dtype=torch.long)
    return aggregate_codes(codes, rowptr, col, weight, reduce, path,
                           offset=offset)


def test_weighted_sum_adds_in_float64_in_row_order(path):
    # 2^24 + 1 is exact in float64: no float32 partial sum loses the 1.
    out = aggregate_one_row(1, [2.0 ** 24, 1.0, -2.0 ** 24], path)
    assert out.item() == 1.0
    # 2^60 + 1 rounds to 2^60 in float64: left to right, the 1 is lost.
    out = aggregate_one_row(1, [2.0 ** 60, 1.0, -2.0 ** 60], path)
    assert out.item() == 0.0
    out = aggregate_one_row(1, [2.0 ** 60, -2.0 ** 60, 1.0], path)
    assert out.item() == 1.0


def test_weighted_products_are_rounded_to_float32(path):
    # (1 + 2^-23) * 5 = 5 + 1.25 * 2^-21 rounds to 5 + 2^-21 in float32:
    # the value a fake-quantized model holds, s (q - z) with s = 1 + 2^-23,
    # q = 2, z = -3. The sum with -5 then keeps 2^-21, not 1.25 * 2^-21.
    step = 1 + 2.0 ** -23
    assert torch.tensor(step) * 5 == 5 + 2.0 ** -21
    out = aggregate_one_row(2, [step, -1.0], path, offset=3)
    assert out.item() == 2.0 ** -21


def test_weighted_sum_is_rounded_once(path):
    # 1 + 2^-24 + 2^-24: a float32 sum rounds 1 + 2^-24 to 1 (a tie, to
    # even) twice; the float64 sum 1 + 2^-23 is a float32.
    out = aggregate_one_row(1, [1.0, 2.0 ** -24, 2.0 ** -24], path)
    assert out.item() == 1 + 2.0 ** -23


def test_weighted_mean_is_rounded_once(path):
    # The mean of 7 equal products is the product: the float64 sum and its
    # quotient are exact. In float32, the sum of seven 0.7 divided by 7 is
    # not 0.7.
    product = torch.tensor(0.1) * 7
    float32_sum = sum([product] * 6, product)
    assert float32_sum / 7 != product
    out = aggregate_one_row(7, [0.1] * 7, path, reduce='mean')
    assert same_bits(out.view(()), product)
    # An offset applies before the product; one rounding after the quotient.
    out = aggregate_one_row([5, -128], [0.1] * 3, path, 'mean', offset=2)
    expected = [math.fsum([float(torch.tensor(0.1) * c)] * 3) / 3
                for c in (7, -126)]
    assert same_bits(out, torch.tensor([expected]))


def test_extreme_offsets_stay_exact(path):
    # |c + o| <= 2^24: every such integer is a float32.
    largest = integer_aggregate.MAX_OFFSET
    for offset in (largest, -largest):
        out = aggregate_one_row([-128, 127], [1.0], path, offset=offset)
        assert out.tolist() == [[offset - 128, offset + 127]]


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
    dtype = torch.float32 if mode in WEIGHTED else torch.int32
    out = torch.empty(600, 9, dtype=dtype)
    offset = WEIGHTED.get(mode, (None, 0))[1]
    assert serial(codes.data_ptr(), rowptr.data_ptr(), col.data_ptr(),
                  weight.data_ptr(), 600, 9, KERNEL_MODES[mode], offset, 2,
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
        (dict(reduce='median'), ValueError, r"'reduce' must be one of "
                                            r"\('sum', 'mean', 'max'\)"),
        (dict(weight=weight, reduce='max'), ValueError,
         "'weight' must be None for reduce='max'"),
        (dict(reduce='mean'), ValueError, "reduce='mean' needs 'weight'"),
        (dict(offset=-3), ValueError, "'offset' applies to weighted sums "
                                      "only"),
        (dict(offset=5, reduce='max'), ValueError, "'offset' applies to "
                                                   "weighted sums only"),
        # Paths that disagreed: the kernel truncated to a C int.
        (dict(weight=weight, offset=0.5), TypeError, "'offset' must be an "
                                                     "int \\(got float\\)"),
        (dict(weight=weight, offset=torch.tensor(2)), TypeError,
         "'offset' must be an int"),
        (dict(weight=weight, offset=1 << 40), ValueError,
         r"'offset' must be in \[-16777088, 16777088\] \(got 1099511627776"),
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
