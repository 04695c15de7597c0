r"""The aggregation of real node features (the input of a binary GraphSAGE's
first layer) written straight into the rows :math:`[\mathbf{x}_i \,\Vert\,
\mathrm{aggr}_j\, \mathbf{x}_j]` that its product takes, in one pass.

:func:`aggregate_rows` adds each target's sources in CSR order, one float32
addition at a time, as PyG's scatter, :class:`torch_sparse.SparseTensor`
and :func:`torch.sparse.mm` do, so the values are the trained layer's bit
for bit (the mean divides the sum by the degree, at least one; the maximum
of no sources is zero). A C kernel (built on first use, see
:mod:`pyg_qgnn.deploy.backend`) shares the targets among
:func:`torch.get_num_threads` OpenMP threads and prefetches source rows;
the concatenation costs no extra pass over memory. Without a compiler
:func:`aggregate_rows` is :obj:`None` and callers take PyTorch's path.
"""
import ctypes
import functools
from typing import Optional

import torch
from torch import Tensor

from pyg_qgnn.deploy.backend import compile_native
from pyg_qgnn.deploy.integer_graph import CSR

#: The reductions of :func:`aggregate_rows`, by kernel mode.
FLOAT_REDUCES = {'sum': 0, 'mean': 1, 'max': 2}

#: Row i of out: x_dst[i] (root_channels floats, none without x_dst), then
#: the reduction of the rows col[rowptr[i]:rowptr[i + 1]] of x (channels
#: floats), in edge order. No fused multiply-add, no reassociation: every
#: addition is rounded as PyTorch rounds it.
_SOURCE = r"""
#include <stdint.h>
#include <string.h>

#define AHEAD 8

int aggregate_rows(const int64_t *rowptr, const int64_t *col,
                   const float *x, int64_t channels, const float *x_dst,
                   int64_t root_channels, int64_t rows, int mode,
                   float *out, int threads) {
    if (mode < 0 || mode > 2) return -1;
    if (rows == 0) return 0;
    const int64_t stop = rowptr[rows], width = root_channels + channels;
    #pragma omp parallel for schedule(dynamic, 64) num_threads(threads)
    for (int64_t i = 0; i < rows; ++i) {
        float *restrict row = out + i * width;
        if (x_dst) memcpy(row, x_dst + i * root_channels,
                          root_channels * sizeof(float));
        float *restrict acc = row + root_channels;
        const int64_t first = rowptr[i], last = rowptr[i + 1];
        /* Sums start from zero, as a scatter's; a maximum from its first
           source (none: zero). */
        const float *restrict head = x + col[first] * channels;
        for (int64_t f = 0; f < channels; ++f)
            acc[f] = (mode == 2 && first < last) ? head[f] : 0.0f;
        for (int64_t e = mode == 2 ? first + 1 : first; e < last; ++e) {
            if (e + AHEAD < stop) {
                const float *next = x + col[e + AHEAD] * channels;
                for (int64_t f = 0; f < channels; f += 16)
                    __builtin_prefetch(next + f);
            }
            const float *restrict src = x + col[e] * channels;
            if (mode == 2) {
                for (int64_t f = 0; f < channels; ++f)
                    acc[f] = src[f] > acc[f] ? src[f] : acc[f];
            } else {
                for (int64_t f = 0; f < channels; ++f) acc[f] += src[f];
            }
        }
        if (mode == 1 && last > first) {
            const float degree = (float)(last - first);
            for (int64_t f = 0; f < channels; ++f) acc[f] /= degree;
        }
    }
    return 0;
}
"""

_FLAGS = ['-fopenmp', '-ffp-contract=off']


@functools.lru_cache(maxsize=None)
def _kernel():
    library = compile_native('float_aggregate', _SOURCE, _FLAGS)
    if library is None:
        return None
    function = library.aggregate_rows
    function.restype = ctypes.c_int
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    function.argtypes = [p, p, p, i64, p, i64, i64, ctypes.c_int, p,
                         ctypes.c_int]
    return function


def available() -> bool:
    r"""Whether the kernel of :func:`aggregate_rows` was built."""
    return _kernel() is not None


def aggregate_rows(csr: CSR, x: Tensor, reduce: str,
                   x_dst: Optional[Tensor] = None) -> Tensor:
    r"""The float32 rows :math:`[\mathbf{x}^{dst}_i \,\Vert\,
    \mathrm{reduce}_{j}\, \mathbf{x}_j]` (without :obj:`x_dst`: only the
    aggregate) of every target :math:`i` of :obj:`csr` over the float32
    source rows :obj:`x`; :obj:`reduce` is :obj:`"sum"`, :obj:`"mean"` or
    :obj:`"max"`. Needs the kernel (:func:`available`)."""
    kernel = _kernel()
    if kernel is None:
        raise RuntimeError('aggregate_rows needs a C compiler (cc or $CC)')
    x = x.contiguous()
    root = 0 if x_dst is None else x_dst.size(1)
    if x_dst is not None:
        x_dst = x_dst.contiguous()
        if x_dst.size(0) != csr.num_targets:
            raise ValueError(f"'x_dst' must have {csr.num_targets} rows, one "
                             f"per target (got {x_dst.size(0)})")
    out = torch.empty(csr.num_targets, root + x.size(1))
    if not out.numel():
        return out
    status = kernel(csr.rowptr.data_ptr(), csr.col.data_ptr(), x.data_ptr(),
                    x.size(1), None if x_dst is None else x_dst.data_ptr(),
                    root, csr.num_targets, FLOAT_REDUCES[reduce],
                    out.data_ptr(), torch.get_num_threads())
    if status != 0:
        raise RuntimeError(f'the float aggregation kernel failed (status '
                           f'{status})')
    return out
