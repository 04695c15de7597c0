"""Tests of the elementwise steps of the deployed integer layers
(pyg_qgnn.deploy.integer_elementwise): the C kernels and the PyTorch path
give the same bits as each other and the values of the equations, and a
deployed model gives the same bits whichever paths it takes."""
import dataclasses

import pytest
import torch

from pyg_qgnn import quantize_model
from pyg_qgnn.deploy import backend, convert
from pyg_qgnn.deploy import (
    integer_aggregate,
    integer_elementwise,
    integer_graph,
)
from pyg_qgnn.deploy.integer_elementwise import (
    add_codes,
    gemm_epilogue,
    native_available,
    quantize,
)
from pyg_qgnn.schemes import A2Q, QAT, DegreeQuant
from tests.deploy.test_integer import MODELS, graph, layer_case, trained

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture
def native():
    # Built lazily, inside the test session's private cache.
    if not native_available():
        pytest.skip('no C compiler (cc or $CC) builds the native kernels here')


def force_torch_paths(monkeypatch):
    r"""Sends every deployed computation down its pure-PyTorch path (the
    float64 GEMM, the PyTorch aggregation and elementwise steps), and makes
    the fast paths fail the test if they are reached all the same."""
    slow = dataclasses.replace(backend(), int8_gemm=False,
                               int8_aggregate='torch')
    for module in (integer_graph, integer_aggregate):
        monkeypatch.setattr(module, 'backend', lambda: slow)
    monkeypatch.setattr(integer_elementwise, 'native_available', lambda: False)

    def unreachable(*args, **kwargs):
        raise AssertionError('a fast path ran')

    monkeypatch.setattr(integer_elementwise, '_library', unreachable)
    monkeypatch.setattr(integer_aggregate, '_native_aggregate', unreachable)
    monkeypatch.setattr(torch, '_int_mm', unreachable)


def any_fast_path() -> bool:
    found = backend()
    return native_available() or found.int8_gemm or \
        found.int8_aggregate == 'native'


def features(num_rows=37, num_features=19, seed=0):
    r"""Values of all sizes, some beyond any code range, and exact ties
    :math:`(k + \frac{1}{2})\,s` of the step 0.25 (rounded to even by both
    paths)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_rows, num_features, generator=gen) * 20
    ties = torch.randint(-300, 300, (num_rows, 4), generator=gen) + 0.5
    x[:, :4] = ties * 0.25
    return x


def grid(name, num_rows=37):
    r"""Keyword arguments of :func:`quantize` for one kind of grid: one
    step for the tensor (signed, with a zero point; unsigned, stored
    shifted), or a step and a bit width per row (A²Q)."""
    gen = torch.Generator().manual_seed(1)
    if name == 'tensor':
        return dict(step=torch.tensor(0.25), zero=3., qmin=-128, qmax=127)
    if name == 'tensor_4bit':
        return dict(step=torch.tensor(0.7), zero=-2., qmin=-8, qmax=7)
    if name == 'tensor_unsigned':
        return dict(step=torch.tensor(0.1), zero=17., qmin=0, qmax=255,
                    shift=-128)
    bits = torch.randint(1, 9, (num_rows, 1), generator=gen).float()
    step = torch.rand(num_rows, 1, generator=gen) + 0.05
    if name == 'rows':
        return dict(step=step, zero=0., qmin=-torch.exp2(bits - 1),
                    qmax=torch.exp2(bits - 1) - 1)
    return dict(step=step, zero=0., qmin=torch.zeros_like(bits),  # unsigned
                qmax=torch.exp2(bits) - 1, shift=-128)


GRIDS = ['tensor', 'tensor_4bit', 'tensor_unsigned', 'rows', 'rows_unsigned']


def reference_codes(x, step, zero, qmin, qmax, shift=0):
    r"""The equation: :math:`\mathrm{clamp}(\lfloor x/s + z\rceil,
    q_{min}, q_{max})`, as floats, before the storage shift."""
    codes = torch.round(x / step + zero)
    return torch.minimum(torch.maximum(codes, torch.as_tensor(qmin)),
                         torch.as_tensor(qmax))


# quantize ####################################################################


@pytest.mark.parametrize('name', GRIDS)
def test_quantize_paths_agree_on_codes(native, name):
    x, kwargs = features(), grid(name)
    fast = quantize(x, **kwargs, path='native')
    slow = quantize(x, **kwargs, path='torch')
    assert fast.dtype == slow.dtype == torch.int8
    assert torch.equal(fast, slow)
    expected = reference_codes(x, **kwargs) + kwargs.get('shift', 0)
    assert torch.equal(fast.float(), expected)


@pytest.mark.parametrize('name', GRIDS)
def test_quantize_paths_agree_on_fake_values(native, name):
    x, kwargs = features(), grid(name)
    kwargs.pop('shift', None)  # fake values are not stored
    fast = quantize(x, **kwargs, fake=True, path='native')
    slow = quantize(x, **kwargs, fake=True, path='torch')
    assert fast.dtype == slow.dtype == torch.float32
    assert torch.equal(fast, slow)
    expected = (reference_codes(x, **kwargs) - kwargs['zero']) * \
        kwargs['step']
    assert torch.equal(fast, expected)
    # In place: both paths write over x (and leave it alone otherwise).
    for path in ('native', 'torch'):
        y = x.clone()
        out = quantize(y, **kwargs, fake=True, inplace=True, path=path)
        assert out.data_ptr() == y.data_ptr() and torch.equal(y, expected)
        y = x.clone()
        quantize(y, **kwargs, fake=True, path=path)
        assert torch.equal(y, x)


@pytest.mark.parametrize('path', ['native', 'torch'])
def test_quantize_refuses_non_finite_values(path):
    if path == 'native' and not native_available():
        pytest.skip('no C compiler (cc or $CC) builds the native kernels here')
    for value in (float('nan'), float('inf'), -float('inf')):
        x = features()
        x[30, 11] = value
        for fake in (False, True):
            with pytest.raises(ValueError, match="'x' contains NaN or Inf"):
                quantize(x, **grid('tensor'), fake=fake, path=path)


def test_quantize_takes_any_trailing_shape(native):
    x = features().view(37, 1, 19)
    kwargs = grid('tensor')
    fast = quantize(x, **kwargs, path='native')
    assert fast.shape == (37, 19)
    assert torch.equal(fast, quantize(x, **kwargs, path='torch'))


def test_path_errors():
    x = features()
    with pytest.raises(ValueError, match="'path' must be None, 'native' or "
                       "'torch' \\(got 'gpu'\\)"):
        quantize(x, **grid('tensor'), path='gpu')
    if native_available():
        with pytest.raises(RuntimeError, match="path='native' needs .*"
                           "contiguous CPU tensors"):
            quantize(x.t(), **grid('tensor'), path='native')


# add_codes, gemm_epilogue ######################################


def rowptr_of(degrees):
    rowptr = torch.zeros(len(degrees) + 1, dtype=torch.long)
    rowptr[1:] = torch.tensor(degrees).cumsum(0)
    return rowptr


@pytest.mark.parametrize('alpha', [1.0, 1.3, 0.0])
@pytest.mark.parametrize('zero', [0, -7])
def test_add_codes_paths_agree(native, alpha, zero):
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(29, 17, generator=gen)
    codes = torch.randint(-128, 128, (29, 17), generator=gen,
                          dtype=torch.int8)
    step = torch.tensor(0.093)
    fast, slow = out.clone(), out.clone()
    assert add_codes(fast, codes, zero, step, alpha, path='native') is fast
    assert add_codes(slow, codes, zero, step, alpha, path='torch') is slow
    assert torch.equal(fast, slow)
    root = (codes.float() - zero) * step  # (1 + eps) x_i, as GIN adds it
    expected = out + (root if alpha == 1 else alpha * root)
    assert torch.equal(fast, expected)


@pytest.mark.parametrize('bias', [False, True])
@pytest.mark.parametrize('per_row', [False, True])
@pytest.mark.parametrize('correction', [False, True])
def test_gemm_epilogue_paths_agree(native, correction, per_row, bias):
    gen = torch.Generator().manual_seed(0)
    rows, cols = 31, 9
    acc = torch.randint(-(1 << 24), 1 << 24, (rows, cols), generator=gen,
                        dtype=torch.int32)
    shift = torch.randint(-5000, 5000, (cols, ), generator=gen,
                          dtype=torch.int32) if correction else None
    col_step = torch.rand(cols, generator=gen) + 0.01
    row_step = torch.rand(rows, generator=gen) + 0.01 if per_row else None
    scale = None if per_row else 0.07 * col_step
    offset = torch.randn(cols, generator=gen) if bias else None
    outs = []
    for path in ('native', 'torch'):
        out = torch.empty(rows, cols)
        gemm_epilogue(acc, out, shift, row_step, col_step, scale, offset,
                      path=path)
        outs.append(out)
    assert torch.equal(*outs)
    integer = acc - shift if correction else acc
    factor = row_step.view(-1, 1) * col_step if per_row else scale
    expected = integer.float() * factor
    assert torch.equal(outs[0], expected + offset if bias else expected)


def test_kernels_are_independent_of_threads(native):
    x, kwargs = features(num_rows=300), grid('rows', num_rows=300)
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        outs.append(quantize(x, **kwargs, path='native'))
    torch.set_num_threads(1)
    assert torch.equal(*outs)


# Deployed models on every path ##############################################

PATH_SCHEMES = {'qat8': QAT(8), 'qat4': QAT(4), 'dq8': DegreeQuant(8),
                'a2q': A2Q(), 'a2q_groups': A2Q(num_groups=4)}


#: Whole models, and layers that take the other branches: GCN's int8 GEMM
#: first, GIN's (1 + eps) x_i with eps != 0, SAGE's integer maximum and
#: bipartite root term.
PATH_CASES = ['model_gcn', 'model_gin', 'model_sage', 'model_gat',
              'gcn_weights_first', 'gin', 'sage_max', 'sage_bipartite']


def path_case(name):
    if name.startswith('model_'):
        torch.manual_seed(0)
        return MODELS[name[len('model_'):]](), graph()
    return layer_case(name)


@pytest.mark.parametrize('scheme', PATH_SCHEMES.values(), ids=PATH_SCHEMES)
@pytest.mark.parametrize('name', PATH_CASES)
def test_deployed_output_is_the_same_on_every_path(monkeypatch, name, scheme):
    if not any_fast_path():
        pytest.skip('no fast path on this machine: nothing to compare')
    model, inputs = path_case(name)
    deployed = convert(trained(quantize_model(model, scheme), *inputs))
    fast = deployed(*inputs)
    force_torch_paths(monkeypatch)
    assert torch.equal(deployed(*inputs), fast)
