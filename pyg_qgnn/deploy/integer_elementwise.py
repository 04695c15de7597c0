r"""The elementwise steps of the deployed integer layers, each one pass over
memory: quantizing floats to :obj:`int8` codes, quantize-dequantize in
place, adding dequantized codes, and the rescaling epilogue of an integer
GEMM.

On large graphs a deployed layer is bound by memory bandwidth, and a chain
of PyTorch elementwise operations (divide, add, round, clamp, cast) reads
and writes the whole feature matrix once per operation. A small C kernel
(built on first use, :func:`~pyg_qgnn.deploy.backend.native_function`)
does each step in one pass; the PyTorch path computes the same float32
operations in the same order, so both give the same bits (tested).
"""
import ctypes
import functools
from typing import Optional

import torch
from torch import Tensor

from pyg_qgnn.deploy.backend import native_function

_NON_FINITE = ("'x' contains NaN or Inf values, which have no integer code; "
               "expected finite node features")

#: Row-parallel loops; x / s + z, round half to even (nearbyintf under the
#: default rounding mode, as torch.round), clamp. No fused multiply-add:
#: every product and sum is rounded as PyTorch rounds it.
_SOURCE = r"""
#include <math.h>
#include <stdint.h>

/* codes (or, with fake, the dequantized values written over x) of rows
   x[n, f]; per-row step/qmin/qmax when row_* are given. Returns 1 if x
   has a NaN or Inf. */
int quantize_rows(const float *x, int64_t n, int64_t f, float step,
                  float zero, float qmin, float qmax, int shift,
                  const float *row_step, const float *row_qmin,
                  const float *row_qmax, int8_t *codes, float *fake,
                  int threads) {
    int bad = 0;
    #pragma omp parallel for schedule(static) num_threads(threads) reduction(|:bad)
    for (int64_t i = 0; i < n; ++i) {
        float s = row_step ? row_step[i] : step;
        float lo = row_qmin ? row_qmin[i] : qmin;
        float hi = row_qmax ? row_qmax[i] : qmax;
        const float *xi = x + i * f;
        int row_bad = 0;
        for (int64_t k = 0; k < f; ++k) row_bad |= !isfinite(xi[k]);
        bad |= row_bad;
        if (row_bad) continue;
        if (codes) {
            int8_t *ci = codes + i * f;
            for (int64_t k = 0; k < f; ++k) {
                float v = nearbyintf(xi[k] / s + zero);
                v = v < lo ? lo : (v > hi ? hi : v);
                ci[k] = (int8_t)((int)v + shift);
            }
        } else {
            float *oi = fake + i * f;
            for (int64_t k = 0; k < f; ++k) {
                float v = nearbyintf(xi[k] / s + zero);
                v = v < lo ? lo : (v > hi ? hi : v);
                oi[k] = (v - zero) * s;
            }
        }
    }
    return bad;
}

/* out[i, k] += alpha * ((float)(codes[i, k] - zero) * step), the product by
   alpha only when alpha != 1 (as (1 + eps) * x is computed then added) */
int add_codes(const int8_t *codes, int64_t n, int64_t f, int zero,
              float step, float alpha, float *out, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t k = 0; k < f; ++k) {
            float v = (float)((int32_t)codes[i * f + k] - zero) * step;
            if (alpha != 1.0f) v = alpha * v;
            out[i * f + k] = out[i * f + k] + v;
        }
    }
    return 0;
}

int gemm_epilogue(const int32_t *acc, int64_t n, int64_t m,
                  const int32_t *correction, const float *row_step,
                  const float *col_step, const float *scale,
                  const float *bias, float *out, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t o = 0; o < m; ++o) {
            int32_t a = acc[i * m + o];
            if (correction) a -= correction[o];
            float sc = row_step ? row_step[i] * col_step[o] : scale[o];
            float v = (float)a * sc;
            if (bias) v = v + bias[o];
            out[i * m + o] = v;
        }
    }
    return 0;
}
"""

_FLAGS = ['-fopenmp', '-ffp-contract=off', '-fno-fast-math']


@functools.lru_cache(maxsize=None)
def _library() -> Optional[dict]:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    f32 = ctypes.c_float
    signatures = dict(
        quantize_rows=[p, i64, i64, f32, f32, f32, f32, i32, p, p, p, p, p,
                       i32],
        add_codes=[p, i64, i64, i32, f32, f32, p, i32],
        gemm_epilogue=[p, i64, i64, p, p, p, p, p, p, i32])
    found = {}
    for name, argtypes in signatures.items():
        function = native_function(name, _SOURCE, argtypes, _FLAGS)
        if function is None:
            return None
        found[name] = function
    return found


def native_available() -> bool:
    r"""Whether the C kernels of this module were built."""
    return _library() is not None


def _use_native(path: Optional[str], *tensors: Tensor) -> bool:
    if path not in (None, 'native', 'torch'):
        raise ValueError(f"'path' must be None, 'native' or 'torch' "
                         f"(got {path!r})")
    if path == 'torch':
        return False
    ready = native_available() and all(
        t is None or (t.device.type == 'cpu' and t.is_contiguous())
        for t in tensors)
    if path == 'native' and not ready:
        raise RuntimeError("path='native' needs a C compiler and contiguous "
                           "CPU tensors; use path=None")
    return ready


def _ptr(t: Optional[Tensor]):
    return None if t is None else t.data_ptr()


def _row_vectors(step: Tensor, qmin, qmax):
    r"""Per-row (step, qmin, qmax) as float32 vectors, or None."""
    if step.numel() == 1 and not isinstance(qmin, Tensor):
        return None
    n = step.numel()
    return tuple(torch.as_tensor(v, dtype=torch.float32).reshape(-1)
                 .expand(n).contiguous() for v in (step, qmin, qmax))


def quantize(x: Tensor, step: Tensor, zero: float, qmin, qmax,
             shift: int = 0, fake: bool = False, inplace: bool = False,
             path: Optional[str] = None) -> Tensor:
    r"""The :obj:`int8` codes :math:`\mathrm{clamp}(\lfloor x/s + z\rceil,
    q_{min}, q_{max}) + \mathrm{shift}` of the rows of :obj:`x` :math:`(N,
    F)`, or with :obj:`fake` the float values :math:`s\,(q - z)`.

    :obj:`step` is a scalar tensor or one per row :math:`(N, 1)`; with one
    per row, :obj:`qmin`/:obj:`qmax` may be :math:`(N, 1)` float tensors too
    (A²Q's per-node widths). With :obj:`fake` and :obj:`inplace` the values
    are written over :obj:`x` (a float32 tensor the caller owns). Raises on
    NaN or Inf."""
    x = x.reshape(x.size(0), -1) if x.dim() != 2 else x
    rows = _row_vectors(step, qmin, qmax)
    if _use_native(path, x):
        x = x.to(torch.float32)
        if fake:
            out = x if inplace and x.dtype == torch.float32 else \
                torch.empty_like(x)
        else:
            out = torch.empty(x.shape, dtype=torch.int8)
        scalar = float(step) if rows is None else 0.
        bounds = (float(qmin), float(qmax)) if rows is None else (0., 0.)
        row_ptrs = (None, None, None) if rows is None else map(_ptr, rows)
        status = _library()['quantize_rows'](
            x.data_ptr(), x.size(0), x.size(1), scalar, float(zero),
            *bounds, int(shift), *row_ptrs,
            None if fake else out.data_ptr(), out.data_ptr() if fake else None,
            torch.get_num_threads())
        if status:
            raise ValueError(_NON_FINITE)
        return out
    if not bool(torch.isfinite(x).all()):
        raise ValueError(_NON_FINITE)
    if rows is not None:
        step, qmin, qmax = (v.view(-1, 1) for v in rows)
    codes = (x / step + zero).round_()
    codes = torch.maximum(codes, torch.as_tensor(qmin, dtype=codes.dtype))
    codes = torch.minimum(codes, torch.as_tensor(qmax, dtype=codes.dtype))
    if fake:
        codes.sub_(zero).mul_(step)
        # Written over x as the native path writes, where x can hold it.
        if inplace and x.dtype == torch.float32:
            return x.copy_(codes)
        return codes
    return codes.to(torch.int32).add_(shift).to(torch.int8)


def add_codes(out: Tensor, codes: Tensor, zero: int, step: Tensor,
              alpha: float = 1., path: Optional[str] = None) -> Tensor:
    r"""Adds :math:`\alpha\,s\,(c - z)` of the :obj:`int8` :obj:`codes`
    to :obj:`out` in place (GIN's root term :math:`(1 + \epsilon)\,
    \hat{\mathbf{x}}_i`; the product by :math:`\alpha` only when
    :math:`\alpha \ne 1`)."""
    if step.numel() == 1 and _use_native(path, out, codes):
        _library()['add_codes'](codes.data_ptr(), codes.size(0),
                                codes.size(1), int(zero), float(step),
                                float(alpha), out.data_ptr(),
                                torch.get_num_threads())
        return out
    value = (codes.to(torch.int32) - zero).to(torch.float32) * step
    return out.add_(value if alpha == 1 else alpha * value)


def gemm_epilogue(acc: Tensor, out: Tensor, correction: Optional[Tensor],
                  row_step: Optional[Tensor], col_step: Tensor,
                  scale: Optional[Tensor], bias: Optional[Tensor],
                  path: Optional[str] = None):
    r"""Writes :math:`(a_{io} - c_o)\,(r_i\,w_o) + b_o` (or
    :math:`(a_{io} - c_o)\,\sigma_o + b_o` with one input step folded into
    :obj:`scale`) of the :obj:`int32` GEMM block :obj:`acc` into
    :obj:`out`."""
    if _use_native(path, acc, out, correction, row_step, col_step, scale,
                   bias):
        _library()['gemm_epilogue'](
            acc.data_ptr(), acc.size(0), acc.size(1), _ptr(correction),
            _ptr(row_step), _ptr(col_step), _ptr(scale), _ptr(bias),
            out.data_ptr(), torch.get_num_threads())
        return
    if correction is not None:
        acc = acc - correction
    if row_step is not None:
        torch.mul(acc, row_step.view(-1, 1) * col_step.view(1, -1), out=out)
    else:
        torch.mul(acc, scale.view(1, -1), out=out)
    if bias is not None:
        out += bias
