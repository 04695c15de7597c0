"""Tests of pyg_qgnn.quantizers.functional against hand-computed references."""
import math

import pytest
import torch

from pyg_qgnn.quantizers import (
    fake_quantize,
    lsq_fake_quantize,
    quant_range,
    ste_sign,
)


def _ref_round(v: float) -> int:
    # The inputs below avoid ties, so plain "round half up" is unambiguous.
    return math.floor(v + 0.5)


def _ref_fake_quant(x, s, z, qmin, qmax):
    return s * (min(max(_ref_round(x / s + z), qmin), qmax) - z)


# --------------------------------------------------------------------------
# quant_range
# --------------------------------------------------------------------------
@pytest.mark.parametrize('bits,signed,expected', [
    (1, True, (-1, 0)),
    (1, False, (0, 1)),
    (2, True, (-2, 1)),
    (4, True, (-8, 7)),
    (4, False, (0, 15)),
    (8, True, (-128, 127)),
    (8, False, (0, 255)),
])
def test_quant_range_matches_two_complement_and_unsigned_ranges(
        bits, signed, expected):
    assert quant_range(bits, signed) == expected


# --------------------------------------------------------------------------
# fake_quantize: forward
# --------------------------------------------------------------------------
def test_fake_quantize_forward_matches_hand_computed_values():
    # s = 0.5, z = 1, codes in [0, 3]  ->  grid {-0.5, 0, 0.5, 1.0}
    x = torch.tensor([-1.0, -0.26, 0.0, 0.24, 0.26, 0.74, 0.76, 5.0])
    expected = torch.tensor([-0.5, -0.5, 0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
    out = fake_quantize(x, torch.tensor(0.5), torch.tensor(1.0), 0, 3)
    assert torch.equal(out, expected)


def test_fake_quantize_forward_matches_formula_elementwise():
    x = torch.tensor([-3.1, -1.3, -0.2, 0.0, 0.33, 0.9, 1.7, 2.45, 9.0])
    s, z, qmin, qmax = 0.3, -2.0, -8, 7
    out = fake_quantize(x, torch.tensor(s), torch.tensor(z), qmin, qmax)
    expected = [_ref_fake_quant(v, s, z, qmin, qmax) for v in x.tolist()]
    assert out.tolist() == pytest.approx(expected, abs=1e-6)


def test_fake_quantize_forward_per_channel_scale_broadcasts():
    x = torch.tensor([[0.1, 1.0, -4.0], [0.6, -2.2, 7.2]])
    scale = torch.tensor([[0.25, 0.5, 2.0]])
    zero = torch.tensor([[0.0, 1.0, -1.0]])
    qmin, qmax = -4, 3
    out = fake_quantize(x, scale, zero, qmin, qmax)
    expected = [[
        _ref_fake_quant(x[i, j].item(), scale[0, j].item(),
                        zero[0, j].item(), qmin, qmax) for j in range(3)
    ] for i in range(2)]
    assert torch.allclose(out, torch.tensor(expected), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------
# fake_quantize: gradients
# --------------------------------------------------------------------------
def test_fake_quantize_ste_gradient_is_upstream_everywhere():
    x = torch.tensor([-100.0, -0.51, -0.5, 0.0, 0.3, 1.0, 1.01, 100.0],
                     requires_grad=True)
    upstream = torch.arange(1.0, 9.0)
    out = fake_quantize(x, torch.tensor(0.5), torch.tensor(1.0), 0, 3,
                        grad='ste')
    out.backward(upstream)
    assert torch.equal(x.grad, upstream)


def test_fake_quantize_clipped_gradient_masks_outside_range():
    # s = 0.5, z = 1, codes [0, 3]: x/s + z in [0, 3]  <=>  x in [-0.5, 1.0]
    x = torch.tensor([-5.0, -0.51, -0.5, -0.49, 0.2, 0.99, 1.0, 1.01, 7.0],
                     requires_grad=True)
    inside = torch.tensor([0, 0, 1, 1, 1, 1, 1, 0, 0], dtype=torch.float)
    upstream = torch.arange(1.0, 10.0)
    out = fake_quantize(x, torch.tensor(0.5), torch.tensor(1.0), 0, 3,
                        grad='clipped')
    out.backward(upstream)
    assert torch.equal(x.grad, upstream * inside)


def test_fake_quantize_clipped_gradient_per_channel_scale():
    # column 0: s=1, z=0, codes [-2, 1] -> x in [-2, 1]
    # column 1: s=0.1, z=0             -> x in [-0.2, 0.1]
    scale = torch.tensor([1.0, 0.1])
    zero = torch.tensor([0.0, 0.0])
    x = torch.tensor([[-2.01, -0.21], [-1.99, -0.19], [0.99, 0.09],
                      [1.01, 0.11]], requires_grad=True)
    inside = torch.tensor([[0, 0], [1, 1], [1, 1], [0, 0]], dtype=torch.float)
    upstream = torch.arange(1.0, 9.0).reshape(4, 2)
    out = fake_quantize(x, scale, zero, -2, 1, grad='clipped')
    out.backward(upstream)
    assert torch.equal(x.grad, upstream * inside)


@pytest.mark.parametrize('grad', ['STE', 'lsq', 'foo', ''])
def test_fake_quantize_rejects_unknown_grad_name(grad):
    with pytest.raises(ValueError, match='grad'):
        fake_quantize(torch.zeros(3), torch.tensor(1.0), torch.tensor(0.0), 0,
                      3, grad=grad)


# --------------------------------------------------------------------------
# lsq_fake_quantize
# --------------------------------------------------------------------------
def _ref_lsq(xs, s, qmin, qmax, upstream, g):
    """Per-element LSQ forward and gradients (Esser et al., 2020)."""
    out, dx, ds = [], [], 0.0
    for x, u in zip(xs, upstream):
        v = x / s
        if v < qmin:
            out.append(qmin * s)
            dx.append(0.0)
            ds += qmin * u
        elif v > qmax:
            out.append(qmax * s)
            dx.append(0.0)
            ds += qmax * u
        else:
            r = _ref_round(v)
            out.append(r * s)
            dx.append(u)
            ds += (r - v) * u
    return out, dx, ds * g


def test_lsq_forward_and_gradients_scalar_step_default_grad_scale():
    xs = [-3.7, -1.26, -0.4, 0.0, 0.3, 0.74, 1.1, 1.6, 4.2]
    upstream = [1.0, -2.0, 0.5, 3.0, 1.5, -1.0, 2.0, 0.25, -0.75]
    s, qmin, qmax = 0.5, -4, 3  # x/s in [-4, 3]  <=>  x in [-2.0, 1.5]
    x = torch.tensor(xs, requires_grad=True)
    step = torch.tensor(s, requires_grad=True)
    out = lsq_fake_quantize(x, step, qmin, qmax)
    out.backward(torch.tensor(upstream))

    g = 1.0 / math.sqrt(len(xs) * qmax)
    ref_out, ref_dx, ref_ds = _ref_lsq(xs, s, qmin, qmax, upstream, g)
    assert out.tolist() == pytest.approx(ref_out, abs=1e-6)
    assert x.grad.tolist() == pytest.approx(ref_dx, abs=0)
    assert step.grad.shape == step.shape
    assert step.grad.item() == pytest.approx(ref_ds, rel=1e-5)


def test_lsq_step_gradient_uses_clamp_bound_outside_range():
    # All inputs saturate: d/ds = qmax for the top, qmin for the bottom.
    x = torch.tensor([10.0, -10.0])
    step = torch.tensor(1.0, requires_grad=True)
    lsq_fake_quantize(x, step, -4, 3, grad_scale=1.0).sum().backward()
    assert step.grad.item() == pytest.approx(3 + (-4))


def test_lsq_explicit_grad_scale_multiplies_step_gradient():
    x = torch.tensor([0.3, -0.8, 1.1])
    upstream = [1.0, 1.0, 1.0]
    s = torch.tensor(0.5, requires_grad=True)
    lsq_fake_quantize(x, s, -8, 7, grad_scale=0.25).sum().backward()
    _, _, ref_ds = _ref_lsq(x.tolist(), 0.5, -8, 7, upstream, 0.25)
    assert s.grad.item() == pytest.approx(ref_ds, rel=1e-5)


def _per_channel_reference(x, steps, qmin, qmax, upstream, g):
    dx = torch.zeros_like(x)
    ds = []
    for c in range(x.size(1)):
        _, col_dx, col_ds = _ref_lsq(x[:, c].tolist(), steps[c], qmin, qmax,
                                     upstream[:, c].tolist(), g)
        dx[:, c] = torch.tensor(col_dx)
        ds.append(col_ds)
    return dx, ds


def test_lsq_per_channel_step_explicit_grad_scale():
    x = torch.tensor([[0.3, -2.6, 0.01], [1.9, 0.74, -0.26],
                      [-0.9, 5.0, 0.4], [0.55, -0.1, -9.0]])
    steps = [0.25, 0.5, 0.1]
    upstream = torch.tensor([[1.0, -1.0, 2.0], [0.5, 1.5, -2.0],
                             [3.0, 1.0, 1.0], [-1.0, 0.25, 4.0]])
    qmin, qmax = -4, 3
    xg = x.clone().requires_grad_()
    step = torch.tensor(steps, requires_grad=True)
    lsq_fake_quantize(xg, step, qmin, qmax, grad_scale=0.3).backward(upstream)
    ref_dx, ref_ds = _per_channel_reference(x, steps, qmin, qmax, upstream,
                                            0.3)
    assert torch.equal(xg.grad, ref_dx)
    assert step.grad.shape == (3, )
    assert step.grad.tolist() == pytest.approx(ref_ds, rel=1e-5)


def test_lsq_per_channel_step_default_grad_scale_counts_elements_per_step():
    # Per-channel steps: each step sees N / C elements, so g = 1/sqrt(N/C*qmax)
    x = torch.tensor([[0.3, -2.6], [1.9, 0.74], [-0.9, 5.0]])
    steps = [0.25, 0.5]
    upstream = torch.tensor([[1.0, -1.0], [0.5, 1.5], [3.0, 1.0]])
    qmin, qmax = -4, 3
    step = torch.tensor([steps], requires_grad=True)  # shape (1, C)
    lsq_fake_quantize(x, step, qmin, qmax).backward(upstream)
    g = 1.0 / math.sqrt(3 * qmax)
    _, ref_ds = _per_channel_reference(x, steps, qmin, qmax, upstream, g)
    assert step.grad.shape == (1, 2)
    assert step.grad[0].tolist() == pytest.approx(ref_ds, rel=1e-5)


# --------------------------------------------------------------------------
# ste_sign
# --------------------------------------------------------------------------
def test_ste_sign_forward_is_plus_minus_one_with_sign_zero_positive():
    x = torch.tensor([-3.0, -1e-8, -0.0, 0.0, 1e-8, 2.5])
    out = ste_sign(x)
    assert torch.equal(out, torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]))
    assert out.dtype == x.dtype


def test_ste_sign_keeps_float_dtype():
    x = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    assert ste_sign(x).dtype == torch.float64


def test_ste_sign_gradient_is_clipped_identity():
    x = torch.tensor([-2.0, -1.01, -1.0, -0.5, 0.0, 0.7, 1.0, 1.01, 3.0],
                     requires_grad=True)
    upstream = torch.arange(1.0, 10.0)
    ste_sign(x).backward(upstream)
    mask = torch.tensor([0, 0, 1, 1, 1, 1, 1, 0, 0], dtype=torch.float)
    assert torch.equal(x.grad, upstream * mask)


@pytest.mark.parametrize('dtype', [torch.int64, torch.int8, torch.uint8,
                                   torch.bool])
def test_ste_sign_rejects_non_float_input(dtype):
    with pytest.raises(TypeError, match='dtype'):
        ste_sign(torch.zeros(3, dtype=dtype))
