r"""Function forms of the quantizers, each with its own autograd rule.

* :func:`fake_quantize` — uniform affine quantize-dequantize with the
  straight-through estimator (``grad="ste"``) or its clipped variant
  (``grad="clipped"``, gradient zero where the input saturates).
* :func:`lsq_fake_quantize` — the same with a learnable step size and the
  step gradient of LSQ (`Esser et al., 2020 <https://arxiv.org/abs/1902.08153>`_).
* :func:`ste_sign` — :math:`\mathrm{sign}(x)\in\{-1,1\}` with the clipped
  straight-through gradient :math:`\mathbb{1}_{|x|\le 1}` used by binary GNNs
  (`Bahri et al., 2021 <https://arxiv.org/abs/2012.15823>`_).
"""
import math
from typing import Optional

import torch
from torch import Tensor

GRADS = ('ste', 'clipped')


def check_bits(bits: int, low: int = 1, high: int = 8) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"'bits' must be an int in [{low}, {high}] "
                        f"(got {bits!r})")
    if not low <= bits <= high:
        raise ValueError(f"'bits' must be in [{low}, {high}] (got {bits})")
    return bits


def check_floating(x: Tensor, name: str = 'x') -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor (got "
                        f"{type(x).__name__})")
    if not x.is_floating_point():
        raise TypeError(f"'{name}' must be a floating-point tensor "
                        f"(got dtype {x.dtype})")
    return x


def check_finite(*values: Tensor):
    r"""Raises if a range statistic (a min, max or mean of the input) is NaN
    or Inf, which happens exactly when the input holds such values."""
    if not all(bool(torch.isfinite(v).all()) for v in values):
        raise ValueError('quantizer input contains NaN or Inf values; '
                         'expected finite floating-point values')


def quant_range(bits: int, signed: bool) -> tuple:
    r"""The integer code range :math:`[q_{min}, q_{max}]` of a bit width."""
    check_bits(bits)
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def affine_codes(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int,
                 qmax: int) -> Tensor:
    r"""The codes :math:`\mathrm{clamp}(\lfloor x/s + z\rceil, q_{min},
    q_{max})` of :obj:`x`, as floats, computed exactly as
    :func:`fake_quantize` computes them (so a deployed model and the
    fake-quantized one agree bit for bit)."""
    return (x / scale + zero_point).round_().clamp_(qmin, qmax)


class _FakeQuantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, clipped):
        v = x / scale + zero_point
        if clipped:
            ctx.save_for_backward((v >= qmin) & (v <= qmax))
        ctx.clipped = clipped
        # In place on the fresh v: one allocation instead of five.
        return v.round_().clamp_(qmin, qmax).sub_(zero_point).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        if ctx.clipped:
            (inside, ) = ctx.saved_tensors
            grad = grad * inside
        return grad, None, None, None, None, None


def fake_quantize(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int,
                  qmax: int, grad: str = 'ste') -> Tensor:
    r"""Quantize and dequantize :obj:`x` on the grid of :obj:`scale`.

    .. math::
        \hat{x} = s\,\big(\mathrm{clamp}(\lfloor x/s + z\rceil,
        q_{min}, q_{max}) - z\big)

    Args:
        x (torch.Tensor): The floating-point input.
        scale (torch.Tensor): The step :math:`s`, broadcastable to :obj:`x`.
        zero_point (torch.Tensor): The zero point :math:`z`, broadcastable.
        qmin (int): Smallest integer code.
        qmax (int): Largest integer code.
        grad (str, optional): :obj:`"ste"` passes the gradient through
            unchanged; :obj:`"clipped"` zeroes it where :math:`x` falls
            outside the representable range. (default: :obj:`"ste"`)
    """
    if grad not in GRADS:
        raise ValueError(f"'grad' must be one of {GRADS} (got {grad!r})")
    return _FakeQuantize.apply(x, scale, zero_point, qmin, qmax,
                               grad == 'clipped')


class _LSQFakeQuantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, step, qmin, qmax, grad_scale):
        v = x / step
        q = torch.clamp(torch.round(v), qmin, qmax)
        ctx.save_for_backward(v, q)
        ctx.qmin, ctx.qmax, ctx.grad_scale = qmin, qmax, grad_scale
        ctx.step_shape = step.shape
        return q * step

    @staticmethod
    def backward(ctx, grad):
        v, q = ctx.saved_tensors
        inside = (v >= ctx.qmin) & (v <= ctx.qmax)
        # d x̂ / d s: round(v) - v inside the range, the clamp bound outside.
        dstep = torch.where(inside, q - v, q) * grad * ctx.grad_scale
        dstep = _sum_to_shape(dstep, ctx.step_shape)
        return grad * inside, dstep, None, None, None


def _sum_to_shape(t: Tensor, shape: torch.Size) -> Tensor:
    if t.shape == shape:
        return t
    lead = t.dim() - len(shape)
    t = t.sum(dim=tuple(range(lead))) if lead > 0 else t
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and t.size(i) != 1)
    return t.sum(dim=dims, keepdim=True).reshape(shape) if dims else \
        t.reshape(shape)


def lsq_fake_quantize(x: Tensor, step: Tensor, qmin: int, qmax: int,
                      grad_scale: Optional[float] = None) -> Tensor:
    r"""Fake quantization with a learnable step size (LSQ).

    .. math::
        \hat{x} = s\,\mathrm{clamp}(\lfloor x/s\rceil, q_{min}, q_{max}),\qquad
        \frac{\partial\hat{x}}{\partial s} = \begin{cases}
        \lfloor x/s\rceil - x/s & q_{min} \le x/s \le q_{max}\\
        q_{min} \text{ or } q_{max} & \text{otherwise}\end{cases}

    The step gradient is multiplied by
    :math:`g = 1/\sqrt{N\,q_{max}}` (:obj:`grad_scale`, by default computed
    from the number :math:`N` of elements of :obj:`x` that share one step).

    Args:
        x (torch.Tensor): The floating-point input.
        step (torch.Tensor): The learnable step :math:`s > 0`,
            broadcastable to :obj:`x`.
        qmin (int): Smallest integer code.
        qmax (int): Largest integer code.
        grad_scale (float, optional): Multiplier of the step gradient.
    """
    if grad_scale is None:
        per_step = max(x.numel() // max(step.numel(), 1), 1)
        grad_scale = 1.0 / math.sqrt(per_step * max(qmax, 1))
    return _LSQFakeQuantize.apply(x, step, qmin, qmax, grad_scale)


class _SteSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x, ) = ctx.saved_tensors
        return grad * (x.abs() <= 1)


def ste_sign(x: Tensor) -> Tensor:
    r"""Binarize with :math:`\mathrm{sign}(x)` (:math:`+1` for :math:`x \ge 0`)
    and the clipped straight-through gradient
    :math:`\partial\,\mathrm{sign}(x)/\partial x := \mathbb{1}_{|x| \le 1}`.
    """
    return _SteSign.apply(check_floating(x))
