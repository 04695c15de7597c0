"""Tests of the graph-side operations of the deployed integer layers
(pyg_qgnn.deploy.integer_graph): the CSR of every adjacency format, the
aggregation of int8 codes against a float reference (scatter of the
dequantized codes) on graphs with isolated nodes, repeated edges and
self-loops (sums and means: the exact sum rounded once, bit for bit), and
the integer GEMM against F.linear of the dequantized values, on every
kernel path present."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor
from torch_geometric.utils import scatter

from pyg_qgnn.deploy import Codes, IntegerWeight, backend
from pyg_qgnn.deploy import integer_graph
from pyg_qgnn.deploy.integer_codec import MAX_GEMM_DEPTH
from pyg_qgnn.deploy.integer_elementwise import native_available
from pyg_qgnn.deploy.integer_graph import aggregate, linear, spmm, to_csr
from pyg_qgnn.quantizers import IntegerQuantizer
from tests.deploy.test_integer_elementwise import force_torch_paths

pytestmark = pytest.mark.usefixtures('one_thread')

NUM_SOURCES, NUM_TARGETS = 25, 30


@pytest.fixture(params=['native', 'torch'])
def path(request, monkeypatch):
    r"""Every operation on its fast paths (the C kernels, the int8 GEMM),
    or every one on its pure-PyTorch path."""
    if request.param == 'native':
        found = backend()
        if not (native_available() and found.int8_aggregate == 'native'):
            pytest.skip('no C compiler (cc or $CC) builds the native kernels '
                        'here')
    else:
        force_torch_paths(monkeypatch)
    return request.param


def edges(seed=0):
    r"""Edges from 25 sources into all but the last 5 of 30 targets, 10 of
    them repeated, self-loops at every 3rd node, and a hub of 37 entries;
    with a positive weight each."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(NUM_SOURCES, (120, ), generator=gen)
    dst = torch.randint(NUM_TARGETS - 5, (120, ), generator=gen)
    loops = torch.arange(0, NUM_SOURCES, 3)
    hub = torch.full((37, ), 7)
    src = torch.cat([src, src[:10], loops,
                     torch.randint(NUM_SOURCES, (37, ), generator=gen)])
    dst = torch.cat([dst, dst[:10], loops, hub])
    weight = torch.rand(src.numel(), generator=gen) + 0.1
    return torch.stack([src, dst]), weight


def codes(grid, num_rows=NUM_SOURCES, num_features=11, seed=0):
    r"""Random int8 codes on one kind of grid: one step for the tensor
    (with zero point 0 or -37), or one step per row (A²Q; with or without a
    zero point)."""
    gen = torch.Generator().manual_seed(seed)
    values = torch.randint(-128, 128, (num_rows, num_features),
                           generator=gen, dtype=torch.int8)
    zero = -37 if grid.endswith('zero_point') else 0
    if grid.startswith('rows'):
        step = torch.rand(num_rows, 1, generator=gen) + 0.01
    else:
        step = torch.tensor(0.0173)
    return Codes(values, step, zero)


GRIDS = ['tensor', 'tensor_zero_point', 'rows', 'rows_zero_point']


def reference(x_hat, edge_index, reduce, weight=None):
    r"""The aggregation of the dequantized codes by
    :func:`torch_geometric.utils.scatter` (a weighted mean divides by the
    number of entries)."""
    src, dst = edge_index
    if reduce == 'max':
        return scatter(x_hat[src], dst, dim=0, dim_size=NUM_TARGETS,
                       reduce='max')
    messages = x_hat[src] if weight is None else \
        weight.view(-1, 1) * x_hat[src]
    out = scatter(messages, dst, dim=0, dim_size=NUM_TARGETS, reduce='sum')
    if reduce == 'mean':
        count = torch.bincount(dst, minlength=NUM_TARGETS).clamp(min=1)
        out = out / count.view(-1, 1)
    return out


# Aggregation ################################################################


@pytest.mark.parametrize('weighted,reduce', [
    (False, 'sum'), (False, 'mean'), (False, 'max'), (True, 'sum'),
    (True, 'mean')])
@pytest.mark.parametrize('grid', GRIDS)
def test_aggregate_equals_float_reference(path, grid, weighted, reduce):
    edge_index, weight = edges()
    weight = weight if weighted else None
    node_codes = codes(grid)
    csr = to_csr(edge_index, (NUM_SOURCES, NUM_TARGETS), weight)
    out = aggregate(node_codes, csr, reduce)
    assert out.dtype == torch.float32 and out.shape == (NUM_TARGETS, 11)
    expected = reference(node_codes.dequantize(), edge_index, reduce, weight)
    torch.testing.assert_close(out, expected, rtol=1e-5,
                               atol=1e-6 * float(expected.abs().max()))
    assert torch.equal(out[-5:], torch.zeros(5, 11))  # isolated targets


def exact_aggregation(x_hat, edge_index, reduce):
    r"""Per target and feature: the exactly rounded float64 sum
    (:func:`math.fsum`) of the dequantized values, divided by the number of
    entries for :obj:`"mean"`, rounded once to float32."""
    src, dst = edge_index
    out = torch.zeros(NUM_TARGETS, x_hat.size(1))
    for i in range(NUM_TARGETS):
        rows = x_hat[src[dst == i]].double()
        for f in range(x_hat.size(1)):
            total = math.fsum(rows[:, f].tolist())
            out[i, f] = total / max(len(rows), 1) if reduce == 'mean' \
                else total
    return out


@pytest.mark.parametrize('reduce', ['sum', 'mean'])
@pytest.mark.parametrize('grid', GRIDS)
def test_sums_are_the_exact_sum_rounded_once(path, grid, reduce):
    # Each message is the dequantized value s (c - z), as the trained model
    # holds it; on a grid their float64 sum is exact in any order, and is
    # rounded once: the bits of a twin that sums in float64.
    edge_index, _ = edges()
    node_codes = codes(grid)
    csr = to_csr(edge_index, (NUM_SOURCES, NUM_TARGETS))
    x_hat = node_codes.dequantize()
    out = aggregate(node_codes, csr, reduce)
    assert torch.equal(out, exact_aggregation(x_hat, edge_index, reduce))
    src, dst = edge_index
    expected = scatter(x_hat.double()[src], dst, dim=0, dim_size=NUM_TARGETS,
                       reduce=reduce).float()
    assert torch.equal(out, expected)
    # Not what float32 sums give: the test tells the two apart.
    float32 = scatter(x_hat[src], dst, dim=0, dim_size=NUM_TARGETS,
                      reduce=reduce)
    assert not torch.equal(out, float32)


@pytest.mark.parametrize('grid', ['tensor', 'tensor_zero_point'])
def test_maxima_are_exact(path, grid):
    edge_index, _ = edges()
    values, step, zero = node_codes = codes(grid)
    csr = to_csr(edge_index, (NUM_SOURCES, NUM_TARGETS))
    src, dst = edge_index
    top = scatter(values[src].long(), dst, dim=0, dim_size=NUM_TARGETS,
                  reduce='max')
    has_entries = (torch.bincount(dst, minlength=NUM_TARGETS) > 0).view(-1, 1)
    expected = ((top - zero).float() * step) * has_entries
    assert torch.equal(aggregate(node_codes, csr, 'max'), expected)


def test_aggregation_paths_agree_bit_for_bit(monkeypatch):
    if not (native_available() and backend().int8_aggregate == 'native'):
        pytest.skip('no C compiler (cc or $CC) builds the native kernels here')
    edge_index, weight = edges()
    cases = []
    for grid in GRIDS:
        for w in (None, weight):
            csr = to_csr(edge_index, (NUM_SOURCES, NUM_TARGETS), w)
            for reduce in ('sum', 'mean') + (('max', ) if w is None else ()):
                cases.append((codes(grid), csr, reduce))
    fast = [aggregate(*case) for case in cases]
    force_torch_paths(monkeypatch)
    for case, out in zip(cases, fast):
        assert torch.equal(aggregate(*case), out)


def test_aggregate_errors_name_the_argument():
    edge_index, weight = edges()
    csr = to_csr(edge_index, (NUM_SOURCES, NUM_TARGETS), weight)
    with pytest.raises(ValueError, match='max aggregation takes no edge '
                       'weights'):
        aggregate(codes('tensor'), csr, 'max')
    with pytest.raises(ValueError, match="'reduce' must be 'sum', 'mean' or "
                       "'max' \\(got 'min'\\)"):
        aggregate(codes('tensor'), csr, 'min')


# CSR of every adjacency format ##############################################


def adjacencies(edge_index):
    r"""The transposed adjacency :obj:`adj_t[target, source]` in every
    sparse format present, repeated edges kept (as entries of value 2 in
    :obj:`torch.sparse`, which sums repeated indices)."""
    size = (NUM_TARGETS, NUM_SOURCES)
    coo = torch.sparse_coo_tensor(edge_index.flip(0),
                                  torch.ones(edge_index.size(1)),
                                  size).coalesce()
    found = {'torch_coo': coo, 'torch_csr': coo.to_sparse_csr()}
    if WITH_TORCH_SPARSE:
        found['sparse_tensor'] = SparseTensor(row=edge_index[1],
                                              col=edge_index[0],
                                              sparse_sizes=size)
    return found


@pytest.mark.parametrize('grid', ['tensor', 'rows_zero_point'])
def test_every_format_aggregates_alike(grid):
    edge_index, _ = edges()
    node_codes = codes(grid)
    size = (NUM_SOURCES, NUM_TARGETS)
    expected = aggregate(node_codes, to_csr(edge_index, size))
    for fmt, adj in adjacencies(edge_index).items():
        out = aggregate(node_codes, to_csr(adj, size))
        torch.testing.assert_close(out, expected, rtol=1e-5,
                                   atol=1e-6 * float(expected.abs().max()),
                                   msg=fmt)
    flipped = to_csr(edge_index.flip(0), size, flow='target_to_source')
    assert torch.equal(aggregate(node_codes, flipped), expected)


def test_unit_valued_torch_sparse_is_a_pattern():
    # Values that are all 1 are dropped: the sum stays one of integers.
    edge_index, _ = edges()
    unique = torch.unique(edge_index, dim=1)
    adj = adjacencies(unique)['torch_csr']
    assert bool((adj.values() == 1).all())
    assert to_csr(adj, (NUM_SOURCES, NUM_TARGETS)).weight is None
    doubled = adjacencies(edge_index)['torch_csr']
    assert to_csr(doubled, (NUM_SOURCES, NUM_TARGETS)).weight is not None


def test_spmm_equals_dense_product():
    edge_index, weight = edges()
    h = torch.randn(NUM_SOURCES, 6)
    for w in (weight, None):
        values = torch.ones(edge_index.size(1)) if w is None else w
        dense = torch.zeros(NUM_TARGETS, NUM_SOURCES).index_put_(
            (edge_index[1], edge_index[0]), values, accumulate=True)
        csr = to_csr(edge_index, (NUM_SOURCES, NUM_TARGETS), w)
        torch.testing.assert_close(spmm(csr, h), dense @ h)


def test_to_csr_errors_name_the_argument():
    edge_index, weight = edges()
    size = (NUM_SOURCES, NUM_TARGETS)
    with pytest.raises(TypeError, match="'edge_index' must have dtype "
                       "torch.int64 \\(got torch.int32\\)"):
        to_csr(edge_index.int(), size)
    with pytest.raises(ValueError, match=r"'edge_index' must be a \(2, "
                       r"num_edges\) tensor or a sparse adjacency \(got "
                       r"Tensor\(3, "):
        to_csr(torch.cat([edge_index, edge_index[:1]]), size)
    with pytest.raises(ValueError, match=r"'edge_index' has source node "
                       r"indices in \[0, 24\] but there are 20 source nodes"):
        to_csr(edge_index, (20, NUM_TARGETS))
    with pytest.raises(ValueError, match=r"'edge_index' has target node "
                       r"indices .* there are 10 target nodes"):
        to_csr(edge_index, (NUM_SOURCES, 10))
    adj = adjacencies(edge_index)['torch_csr']
    with pytest.raises(ValueError, match="'edge_weight' must be None for a "
                       "sparse adjacency"):
        to_csr(adj, size, weight)
    with pytest.raises(ValueError, match='the sparse adjacency has 25 '
                       'columns but 24 source nodes'):
        to_csr(adj, (24, NUM_TARGETS))


# Integer GEMM ################################################################


def integer_weight(granularity, bits=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    quantizer = IntegerQuantizer(bits, symmetric=True, dynamic=True,
                                 observer='abs', granularity=granularity,
                                 channel_axis=0)
    return IntegerWeight.from_quantizer(torch.randn(9, 11, generator=gen),
                                        quantizer)


@pytest.mark.parametrize('bias', [False, True])
@pytest.mark.parametrize('granularity', ['tensor', 'channel'])
@pytest.mark.parametrize('grid', GRIDS)
def test_linear_equals_float_reference(path, grid, granularity, bias):
    x_codes = codes(grid, num_rows=50)
    weight = integer_weight(granularity)
    offset = torch.randn(9) if bias else None
    out = linear(x_codes, weight, offset)
    expected = F.linear(x_codes.dequantize(), weight.dequantize(), offset)
    torch.testing.assert_close(out, expected, rtol=1e-5,
                               atol=1e-6 * float(expected.abs().max()))
    # The integer part is exact: against a float64 product of the codes.
    exact = (x_codes.values.double() - x_codes.zero_point) @ \
        weight.codes().double().t()
    scale = x_codes.step.double() * weight.step.double()
    expected64 = exact * scale + (0 if offset is None else offset.double())
    torch.testing.assert_close(out.double(), expected64, rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize('grid', GRIDS)
def test_int8_gemm_and_float64_fallback_agree(monkeypatch, grid):
    if not backend().int8_gemm:
        pytest.skip('torch._int_mm does not run on this CPU')
    x_codes, weight = codes(grid, num_rows=50), integer_weight('channel')
    offset = torch.randn(9)
    fast = linear(x_codes, weight, offset)
    slow = dataclasses.replace(backend(), int8_gemm=False)
    monkeypatch.setattr(integer_graph, 'backend', lambda: slow)
    assert torch.equal(linear(x_codes, weight, offset), fast)


def test_linear_in_blocks_equals_one_block(monkeypatch):
    x_codes, weight = codes('rows_zero_point', num_rows=50), \
        integer_weight('channel')
    whole = linear(x_codes, weight)
    monkeypatch.setattr(integer_graph, 'GEMM_BLOCK', 7)  # 8 blocks
    assert torch.equal(linear(x_codes, weight), whole)


def test_int32_accumulation_is_exact_at_the_extremes(path):
    # As many products (-128) * (-127) as an int32 holds: 2.13e9 < 2^31.
    quantizer = IntegerQuantizer(8, symmetric=True, dynamic=True,
                                 observer='abs')
    weight = IntegerWeight.from_quantizer(-torch.ones(3, MAX_GEMM_DEPTH),
                                          quantizer)
    assert int(weight.codes().max()) == -127
    values = torch.full((5, MAX_GEMM_DEPTH), -128, dtype=torch.int8)
    out = linear(Codes(values, torch.tensor(1.), 0), weight)
    total = torch.tensor(MAX_GEMM_DEPTH * 128 * 127, dtype=torch.int32)
    assert torch.equal(out, (total.float() * weight.step).expand(5, 3))


def test_linear_checks_the_feature_count():
    with pytest.raises(ValueError, match="'x' has 10 features but the layer "
                       "expects 11"):
        linear(codes('tensor', num_features=10), integer_weight('tensor'))
