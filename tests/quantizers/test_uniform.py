"""Tests of IntegerQuantizer (pyg_qgnn.quantizers.uniform)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from pyg_qgnn.quantizers import IntegerQuantizer, quant_range

OBSERVER_NAMES = ['abs', 'mom', 'per']


def _calibrated(x, **kwargs):
    q = IntegerQuantizer(**kwargs)
    q(x)
    return q.eval()


def _broadcast(v, x, q):
    """Per-range vector -> shape broadcastable to x, by hand."""
    if q.granularity == 'tensor':
        return v.reshape(())
    axis = 0 if q.granularity == 'node' else q.channel_axis % x.dim()
    shape = [1] * x.dim()
    shape[axis] = -1
    return v.reshape(shape)


# --------------------------------------------------------------------------
# Construction and argument checks
# --------------------------------------------------------------------------
@pytest.mark.parametrize('bits,exc', [(0, ValueError), (9, ValueError),
                                      (-1, ValueError), (2.5, TypeError),
                                      (True, TypeError), ('4', TypeError)])
def test_bad_bits_raise_naming_bits(bits, exc):
    with pytest.raises(exc, match='bits'):
        IntegerQuantizer(bits)


def test_symmetric_with_one_bit_raises():
    with pytest.raises(ValueError, match='symmetric'):
        IntegerQuantizer(1, symmetric=True)


@pytest.mark.parametrize('granularity', ['foo', 'Tensor', 'row'])
def test_unknown_granularity_raises(granularity):
    with pytest.raises(ValueError, match='granularity'):
        IntegerQuantizer(granularity=granularity)


def test_unknown_grad_raises():
    with pytest.raises(ValueError, match='grad'):
        IntegerQuantizer(grad='straight')


def test_unknown_observer_raises():
    with pytest.raises(ValueError, match='observer'):
        IntegerQuantizer(observer='xyz')


@pytest.mark.parametrize('bits', [1, 4, 8])
def test_repr_shows_bits(bits):
    assert f'bits={bits}' in repr(IntegerQuantizer(bits))


def test_repr_shows_configuration():
    r = repr(IntegerQuantizer(4, signed=False, granularity='channel',
                              observer='per', symmetric=True, dynamic=True))
    for part in ['bits=4', 'signed=False', "granularity='channel'",
                 "observer='per'", 'symmetric=True', 'dynamic=True']:
        assert part in r


@pytest.mark.parametrize('bits,signed', [(1, True), (3, False), (8, True)])
def test_code_range_and_dtype(bits, signed):
    q = IntegerQuantizer(bits, signed=signed)
    assert (q.qmin, q.qmax) == quant_range(bits, signed)
    assert q.code_dtype == (torch.int8 if signed else torch.uint8)


# --------------------------------------------------------------------------
# Scale and zero point from the observed range
# --------------------------------------------------------------------------
def test_asymmetric_qparams_match_hand_computation():
    x = torch.tensor([-1.0, 0.5, 3.3])
    q = _calibrated(x, bits=8, observer='abs')
    s = (3.3 - (-1.0)) / 255
    z = -128 - round(-1.0 / s)  # -1/s = -59.3: round, not floor
    assert z == -69
    assert q.scale.item() == pytest.approx(s)
    assert q.zero_point.item() == z


def test_range_is_widened_to_contain_zero():
    q = _calibrated(torch.tensor([2.0, 6.0]), bits=8, signed=False,
                    observer='abs')
    assert q.scale.item() == pytest.approx(6.0 / 255)
    assert q.zero_point.item() == 0
    assert q.eval()(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_symmetric_signed_qparams_match_hand_computation():
    q = _calibrated(torch.tensor([-5.0, 1.0, 2.0]), bits=4, symmetric=True,
                    observer='abs')
    assert q.scale.item() == pytest.approx(5.0 / 7)
    assert q.zero_point.item() == 0


def test_symmetric_unsigned_uses_max_only():
    q = _calibrated(torch.tensor([-5.0, 1.0, 3.0]), bits=4, signed=False,
                    symmetric=True, observer='abs')
    assert q.scale.item() == pytest.approx(3.0 / 15)
    assert q.zero_point.item() == 0


# --------------------------------------------------------------------------
# Properties (hypothesis)
# --------------------------------------------------------------------------
@st.composite
def quantizer_and_input(draw):
    bits = draw(st.integers(1, 8))
    signed = draw(st.booleans())
    granularity = draw(st.sampled_from(['tensor', 'channel', 'node']))
    symmetric = draw(st.booleans()) if bits >= 2 else False
    observer = draw(st.sampled_from(OBSERVER_NAMES))
    rows = draw(st.integers(1, 5))
    cols = draw(st.integers(1, 6))
    magnitude = draw(st.sampled_from([2.0**-10, 1.0, 2.0**10, 2.0**20,
                                      2.0**100]))
    elements = st.floats(-magnitude, magnitude, width=32, allow_nan=False,
                         allow_infinity=False)
    x = draw(arrays(np.float32, (rows, cols), elements=elements))
    q = IntegerQuantizer(bits, signed=signed, granularity=granularity,
                         observer=observer, symmetric=symmetric)
    return q, torch.from_numpy(x)


def _representable(q, x):
    s = _broadcast(q.scale, x, q)
    z = _broadcast(q.zero_point, x, q)
    lo, hi = (q.qmin - z) * s, (q.qmax - z) * s
    return s, (x >= lo) & (x <= hi)


@settings(deadline=None, max_examples=50)
@given(quantizer_and_input())
def test_round_trip_error_at_most_half_a_step_inside_range(data):
    q, x = data
    codes = q.eval().quantize(x)
    y = q.dequantize(codes)
    s, inside = _representable(q, x)
    assert torch.isfinite(q.scale).all() and (q.scale > 0).all()
    # Half a step, plus float32 rounding in x/s + z and in (q - z) * s.
    tol = s / 2 + 1e-6 * (x.abs() + s * 256)
    err = (y - x).abs()
    assert ((err <= tol) | ~inside).all()


@settings(deadline=None, max_examples=50)
@given(quantizer_and_input())
def test_codes_lie_in_code_range_with_code_dtype(data):
    q, x = data
    codes = q.quantize(x)
    assert codes.dtype == (torch.int8 if q.signed else torch.uint8)
    assert codes.shape == x.shape
    assert int(codes.min()) >= q.qmin and int(codes.max()) <= q.qmax


@settings(deadline=None, max_examples=50)
@given(quantizer_and_input())
def test_quantization_is_idempotent(data):
    q, x = data
    q.eval()
    y = q(x)
    assert torch.equal(q(y), y)
    codes = q.quantize(x)
    assert torch.equal(q.quantize(q.dequantize(codes)), codes)


@settings(deadline=None, max_examples=50)
@given(quantizer_and_input())
def test_eval_forward_equals_dequantize_of_quantize(data):
    q, x = data
    q.eval()
    y = q(x)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert torch.equal(y, q.dequantize(q.quantize(x)))


@settings(deadline=None, max_examples=50)
@given(quantizer_and_input())
def test_forward_matches_formula_with_stored_qparams(data):
    q, x = data
    y = q.eval()(x)
    s = _broadcast(q.scale, x, q)
    z = _broadcast(q.zero_point, x, q)
    ref = (torch.clamp(torch.round(x / s + z), q.qmin, q.qmax) - z) * s
    assert torch.equal(y, ref)


def test_values_outside_range_saturate_at_the_ends():
    q = _calibrated(torch.tensor([-1.0, 1.0]), bits=4, observer='abs')
    codes = q.quantize(torch.tensor([-100.0, 100.0]))
    assert codes.tolist() == [q.qmin, q.qmax]


# --------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------
@pytest.mark.parametrize('dtype', [torch.int64, torch.int8, torch.uint8,
                                   torch.bool])
def test_forward_rejects_integer_input(dtype):
    q = IntegerQuantizer(8)
    with pytest.raises(TypeError, match='dtype'):
        q(torch.ones(3, dtype=dtype))


@pytest.mark.parametrize('dtype', [torch.int64, torch.int32])
def test_quantize_rejects_integer_input(dtype):
    q = _calibrated(torch.tensor([-1.0, 1.0]))
    with pytest.raises(TypeError, match='dtype'):
        q.quantize(torch.ones(3, dtype=dtype))


def test_dequantize_rejects_float_codes():
    q = _calibrated(torch.tensor([-1.0, 1.0]))
    with pytest.raises(TypeError, match='codes'):
        q.dequantize(torch.ones(3))


def test_dequantize_before_calibration_raises():
    with pytest.raises(RuntimeError):
        IntegerQuantizer(8).dequantize(torch.zeros(3, dtype=torch.int8))


@pytest.mark.parametrize('observer', OBSERVER_NAMES)
@pytest.mark.parametrize('bad', [float('nan'), float('inf'), float('-inf')])
def test_forward_rejects_non_finite_input(observer, bad):
    x = torch.tensor([0.5, bad, -1.0])
    with pytest.raises(ValueError, match='NaN or Inf'):
        IntegerQuantizer(8, observer=observer)(x)


@pytest.mark.parametrize('observer', OBSERVER_NAMES)
def test_training_forward_rejects_non_finite_after_calibration(observer):
    q = IntegerQuantizer(8, observer=observer)
    q(torch.randn(10))
    x = torch.randn(10)
    x[4] = float('nan')
    with pytest.raises(ValueError, match='NaN or Inf'):
        q(x)
    assert torch.isfinite(q.scale).all()


@pytest.mark.parametrize('observer', OBSERVER_NAMES)
@pytest.mark.parametrize('granularity', ['tensor', 'node'])
def test_single_nan_in_large_tensor_is_caught(observer, granularity):
    x = torch.randn(2, 100_000) if granularity == 'node' else \
        torch.randn(100_000)
    x.view(-1)[77_777] = float('nan')
    q = IntegerQuantizer(8, observer=observer, granularity=granularity)
    with pytest.raises(ValueError, match='NaN or Inf'):
        q(x)


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_quantize_rejects_non_finite_in_eval(bad):
    q = _calibrated(torch.tensor([-1.0, 1.0]))
    with pytest.raises(ValueError, match='NaN or Inf'):
        q.quantize(torch.tensor([0.0, bad]))


def test_lsq_first_call_rejects_non_finite():
    with pytest.raises(ValueError, match='NaN or Inf'):
        IntegerQuantizer(4, grad='lsq')(torch.tensor([1.0, float('inf')]))


# --------------------------------------------------------------------------
# Degenerate inputs: constants, empty, extremes
# --------------------------------------------------------------------------
CONFIGS = [
    dict(bits=8),
    dict(bits=8, signed=False),
    dict(bits=4, symmetric=True),
    dict(bits=4, signed=False, symmetric=True),
    dict(bits=1),
    dict(bits=1, signed=False),
    dict(bits=3, granularity='node'),
    dict(bits=2, granularity='channel', observer='per'),
    dict(bits=4, grad='lsq'),
]


@pytest.mark.parametrize('kwargs', CONFIGS)
@pytest.mark.parametrize('value', [0.0, 3.0, -2.0])
def test_constant_input_gives_finite_positive_scale(kwargs, value):
    q = IntegerQuantizer(**kwargs)
    y = q(torch.full((4, 3), value))
    assert torch.isfinite(q.scale).all() and (q.scale > 0).all()
    assert torch.isfinite(y).all()


@pytest.mark.parametrize('kwargs', CONFIGS)
def test_zero_is_always_exact(kwargs):
    q = IntegerQuantizer(**kwargs)
    q(torch.tensor([[-1.5, 0.2, 4.0], [0.0, 2.0, -0.7]]))
    q.eval()
    assert torch.equal(q(torch.zeros(2, 3)), torch.zeros(2, 3))
    assert torch.equal(q(torch.full((2, 3), 0.0)), torch.zeros(2, 3))


@pytest.mark.parametrize('kwargs', [c for c in CONFIGS if 'grad' not in c])
@pytest.mark.parametrize('value', [0.0, 3.0, -2.0])
def test_constant_input_is_reconstructed_when_representable(kwargs, value):
    q = IntegerQuantizer(**kwargs)
    x = torch.full((4, 3), value)
    q(x)
    s, inside = _representable(q, x)
    if not bool(inside.all()):  # e.g. -2 for an unsigned symmetric grid
        assert value < 0 and not q.signed and q.symmetric
        return
    assert torch.allclose(q.eval()(x), x, rtol=1e-6, atol=0)


@pytest.mark.parametrize('kwargs', CONFIGS)
@pytest.mark.parametrize('shape', [(0, ), (0, 3), (2, 0)])
def test_empty_input_passes_through_forward(kwargs, shape):
    q = IntegerQuantizer(**kwargs)
    x = torch.empty(shape)
    y = q(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert not q.initialized  # an empty tensor says nothing about the range


@pytest.mark.parametrize('kwargs', CONFIGS)
@pytest.mark.parametrize('shape', [(0, ), (0, 3)])
def test_quantize_empty_returns_empty_codes(kwargs, shape):
    q = IntegerQuantizer(**kwargs)
    codes = q.quantize(torch.empty(shape))
    assert codes.shape == shape
    assert codes.dtype == q.code_dtype
    q(torch.tensor([[1.0, -2.0, 3.0]]))  # also after calibration
    assert q.quantize(torch.empty(shape)).shape == shape


@pytest.mark.parametrize('kwargs', [dict(bits=8), dict(bits=8, signed=False),
                                    dict(bits=4, observer='per')])
def test_scale_stays_finite_for_extreme_finite_inputs(kwargs):
    # Every value is a finite float32, but hi - lo overflows float32.
    big = torch.finfo(torch.float32).max / 2 * 1.5
    x = torch.tensor([-big, 0.0, big])
    q = IntegerQuantizer(**kwargs)
    y = q(x)
    assert torch.isfinite(q.scale).all() and (q.scale > 0).all()
    assert torch.isfinite(y).all()


# --------------------------------------------------------------------------
# Granularity
# --------------------------------------------------------------------------
def test_node_granularity_has_one_scale_per_row():
    x = torch.tensor([[1.0, -1.0], [10.0, 2.0], [0.1, 0.0]])
    q = _calibrated(x, bits=8, granularity='node', observer='abs')
    assert q.scale.shape == (3, )
    expected = [2.0 / 255, 10.0 / 255, 0.1 / 255]
    assert q.scale.tolist() == pytest.approx(expected)


@pytest.mark.parametrize('training', [True, False])
def test_node_granularity_recomputes_for_a_new_number_of_nodes(training):
    q = IntegerQuantizer(8, granularity='node', observer='mom')
    q(torch.randn(5, 4))
    q.train(training)
    x = torch.tensor([[4.0, -4.0], [1.0, 0.0], [0.0, 2.0], [8.0, 8.0],
                      [-1.0, 1.0], [0.5, 0.25], [3.0, 3.0]])
    y = q(x)
    assert q.scale.shape == (7, )
    assert q.observer.min_val.shape == (7, )
    assert y.shape == x.shape
    # Fresh statistics: the scale depends on the new rows only.
    fresh = _calibrated(x, bits=8, granularity='node', observer='mom')
    assert torch.equal(q.scale, fresh.scale)
    assert torch.equal(y, fresh(x))


@pytest.mark.parametrize('channel_axis,n', [(-1, 4), (1, 4), (0, 3)])
def test_channel_granularity_uses_channel_axis(channel_axis, n):
    x = torch.arange(12, dtype=torch.float).reshape(3, 4) - 5.0
    q = _calibrated(x, bits=8, granularity='channel', observer='abs',
                    channel_axis=channel_axis)
    assert q.scale.shape == (n, )
    axis = channel_axis % 2
    lo = x.amin(dim=1 - axis).clamp(max=0)
    hi = x.amax(dim=1 - axis).clamp(min=0)
    expected = ((hi - lo) / 255).clamp(min=torch.finfo(torch.float).eps)
    assert q.scale.tolist() == pytest.approx(expected.tolist())


def test_channel_granularity_on_3d_input_middle_axis():
    x = torch.randn(2, 5, 3)
    q = _calibrated(x, bits=8, granularity='channel', channel_axis=1,
                    observer='abs')
    assert q.scale.shape == (5, )
    y = q(x)
    for c in range(5):  # each slice quantized on its own grid
        s = q.scale[c]
        assert ((y[:, c] - x[:, c]).abs() <= s / 2 + 1e-6).all()


def test_node_granularity_needs_at_least_one_dimension():
    with pytest.raises(ValueError, match='granularity'):
        IntegerQuantizer(granularity='node')(torch.tensor(1.0))


# --------------------------------------------------------------------------
# Training vs evaluation
# --------------------------------------------------------------------------
def test_train_mode_updates_range_eval_freezes_it():
    q = IntegerQuantizer(8, observer='abs')
    q(torch.tensor([-1.0, 1.0]))
    q(torch.tensor([-4.0, 2.0]))
    assert q.observer.min_val.item() == -4.0
    scale = q.scale.clone()
    assert scale.item() == pytest.approx(6.0 / 255)
    q.eval()
    y = q(torch.tensor([-100.0, 100.0]))
    assert torch.equal(q.scale, scale)
    assert q.observer.min_val.item() == -4.0
    assert y.tolist() == pytest.approx([-4.0, 2.0], abs=scale.item())


def test_first_call_in_eval_mode_calibrates():
    q = IntegerQuantizer(8, observer='abs').eval()
    q(torch.tensor([-1.0, 3.0]))
    assert q.initialized
    assert q.scale.item() == pytest.approx(4.0 / 255)


def test_momentum_range_in_training_follows_ema():
    q = IntegerQuantizer(8, signed=False, observer='mom')
    q(torch.tensor([0.0, 10.0]))
    q(torch.tensor([0.0, 20.0]))
    assert q.scale.item() == pytest.approx(11.0 / 255)


def test_reset_parameters_forgets_range():
    q = IntegerQuantizer(8)
    q(torch.tensor([-1.0, 1.0]))
    q.reset_parameters()
    assert not q.initialized and not q.observer.initialized


# --------------------------------------------------------------------------
# dynamic=True
# --------------------------------------------------------------------------
def test_dynamic_activation_range_recomputed_every_call_without_history():
    q = IntegerQuantizer(8, signed=False, observer='mom', dynamic=True).eval()
    q(torch.tensor([0.0, 10.0]))
    q(torch.tensor([0.0, 2.0]))
    assert q.scale.item() == pytest.approx(2.0 / 255)  # no EMA, no freezing


def test_dynamic_keeps_its_scale_while_the_input_range_is_unchanged():
    p = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    q = IntegerQuantizer(8, dynamic=True)
    q(p)
    # A scale restored from a checkpoint may differ from a recomputed one in
    # the last bit; it must survive as long as the weights keep their range.
    q.scale = q.scale * (1 + 1e-6)
    pinned = q.scale.clone()
    q(p)
    q.eval()(p)
    assert torch.equal(q.scale, pinned)
    with torch.no_grad():
        p.mul_(2)
    q(p)
    assert not torch.equal(q.scale, pinned)


def test_dynamic_parameter_range_recomputed_after_optimizer_step():
    p = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    q = IntegerQuantizer(8, observer='abs', dynamic=True)
    q(p)
    assert q.scale.item() == pytest.approx(3.0 / 255)
    opt = torch.optim.SGD([p], lr=1.0)
    p.grad = torch.tensor([-1.0, 1.0, 0.0])  # p -> [2, -3, 0.5]
    opt.step()
    q(p)
    assert q.scale.item() == pytest.approx(5.0 / 255)


def test_dynamic_parameter_range_recomputed_after_in_place_no_grad_change():
    p = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    q = IntegerQuantizer(8, observer='abs', dynamic=True)
    q(p)
    with torch.no_grad():
        p.mul_(2)
    q(p)
    assert q.scale.item() == pytest.approx(6.0 / 255)


def test_dynamic_parameter_range_recomputed_after_data_mul():
    p = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    q = IntegerQuantizer(8, observer='abs', dynamic=True)
    q(p)
    p.data.mul_(2)
    y = q(p)
    assert q.scale.item() == pytest.approx(6.0 / 255)
    assert y.tolist() == pytest.approx([2.0, -4.0, 1.0], abs=3e-2)


# --------------------------------------------------------------------------
# grad='lsq'
# --------------------------------------------------------------------------
def test_lsq_scale_is_parameter_initialised_from_mean_abs():
    x = torch.tensor([[1.0, -3.0], [0.5, 2.5]])
    q = IntegerQuantizer(4, grad='lsq')
    q(x)
    assert isinstance(q.scale, nn.Parameter)
    expected = 2 * (1.0 + 3.0 + 0.5 + 2.5) / 4 / math.sqrt(7)
    assert q.scale.shape == (1, )
    assert q.scale.item() == pytest.approx(expected)
    assert q.zero_point.tolist() == [0.0]
    assert any(p is q.scale for p in q.parameters())


def test_lsq_per_channel_init():
    x = torch.tensor([[1.0, -4.0], [3.0, 0.0]])
    q = IntegerQuantizer(8, grad='lsq', granularity='channel')
    q(x)
    sq = math.sqrt(127)
    assert q.scale.tolist() == pytest.approx([2 * 2.0 / sq, 2 * 2.0 / sq])


def test_lsq_scale_gets_gradient_and_optimizer_changes_it():
    torch.manual_seed(0)
    x = torch.randn(64)
    q = IntegerQuantizer(4, grad='lsq')
    q(x)
    opt = torch.optim.SGD(q.parameters(), lr=0.1)
    before = q.scale.detach().clone()
    loss = (q(x) - 3 * x).pow(2).sum()  # wants a larger step
    loss.backward()
    assert q.scale.grad is not None and q.scale.grad.shape == (1, )
    assert q.scale.grad.abs().item() > 0
    opt.step()
    assert not torch.equal(q.scale.detach(), before)


def test_lsq_step_not_reobserved_in_training():
    q = IntegerQuantizer(4, grad='lsq')
    q(torch.tensor([1.0, -1.0]))
    s = q.scale.detach().clone()
    q(torch.tensor([100.0, -100.0]))
    assert torch.equal(q.scale.detach(), s)


def test_lsq_per_node_with_new_node_count_raises():
    q = IntegerQuantizer(4, grad='lsq', granularity='node')
    q(torch.randn(3, 2))
    with pytest.raises(ValueError):
        q(torch.randn(4, 2))


# --------------------------------------------------------------------------
# State dict
# --------------------------------------------------------------------------
def test_state_dict_holds_scale_zero_point_and_observer_range():
    q = IntegerQuantizer(8, granularity='channel')
    q(torch.randn(4, 3))
    sd = q.state_dict()
    assert {'scale', 'zero_point', 'observer.min_val',
            'observer.max_val'} <= set(sd)
    assert sd['scale'].shape == (3, )
    assert sd['observer.min_val'].shape == (3, )


@pytest.mark.parametrize('kwargs', [
    dict(bits=8),
    dict(bits=4, granularity='channel', observer='per'),
    dict(bits=3, signed=False, granularity='node', observer='abs'),
    dict(bits=4, grad='lsq', granularity='channel'),
])
def test_fresh_quantizer_loads_calibrated_state_and_matches_in_eval(kwargs):
    torch.manual_seed(0)
    calibrated = IntegerQuantizer(**kwargs)
    for _ in range(3):
        calibrated(torch.randn(5, 4) * 3)
    fresh = IntegerQuantizer(**kwargs)
    fresh.load_state_dict(calibrated.state_dict())
    for name, value in calibrated.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    calibrated.eval()
    fresh.eval()
    x = torch.randn(5, 4) * 4
    assert torch.equal(fresh(x), calibrated(x))
    assert torch.equal(fresh.quantize(x), calibrated.quantize(x))
