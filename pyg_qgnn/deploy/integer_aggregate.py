r"""Aggregation of :obj:`int8` node codes over a graph, as the deployed
integer GCN, GIN and SAGE layers need it: every target node sums (or takes
the maximum of) the codes of its sources, in integers, or sums their
values (one float factor per edge: the step, times GCN's normalization) in
float64 in an order fixed by the graph, so that every path gives the same
bits.

Paths of :func:`aggregate_codes`, tested against each other bit for bit:

* :obj:`"native"`: a C kernel built on first use (see
  :mod:`pyg_qgnn.deploy.backend`), its target rows shared among
  :func:`torch.get_num_threads` OpenMP threads (one thread where the
  compiler has no OpenMP), the loop over features vectorized. It gathers
  :obj:`int8` rows, a quarter of the bytes of :obj:`float32` features.
* :obj:`"torch"`: pure PyTorch, always present. Sums and maxima gather and
  scatter chunks of rows; the weighted sum takes one step per position
  within a row, :math:`O(\max \deg)` Python steps.

Random graph of 100,000 nodes, 1,000,000 edges and 128 features, two
threads of a busy 2-core AMD EPYC (medians of
:class:`torch.utils.benchmark.Timer`): float :obj:`SparseTensor @ x`
280 ms; native sum 46 ms, weighted sum 55 ms, max 39 ms (the kernel
itself 15-18 ms; the rest is the checks and the first touch of the
output); torch sum 450 ms, weighted sum 850 ms, max 920 ms.
"""
import ctypes
import functools
from typing import Callable, Iterator, Optional, Tuple

import torch
from torch import Tensor

from pyg_qgnn.deploy.backend import backend, native_function

AGGREGATE_PATHS = ('native', 'torch')
AGGREGATE_REDUCES = ('sum', 'mean', 'max')

#: The most entries of a row whose :obj:`int8` codes sum exactly in an
#: :obj:`int32`: :math:`2^{24} \cdot 128 = 2^{31}`.
MAX_EXACT_DEGREE = 1 << 24

#: The largest :math:`|o|` of an offset: a code plus it stays exact in
#: :obj:`float32` (and in the kernel's C :obj:`int`).
MAX_OFFSET = (1 << 24) - 128

#: Codes gathered at once by the pure-PyTorch sum and maximum.
_CHUNK = 1 << 22

# The kernel's modes.
_SUM, _WEIGHTED_SUM, _MAX, _WEIGHTED_MEAN = 0, 1, 2, 3


def aggregate_codes(codes: Tensor, rowptr: Tensor, col: Tensor,
                    weight: Optional[Tensor] = None, reduce: str = 'sum',
                    path: Optional[str] = None, offset: int = 0) -> Tensor:
    r"""Aggregates the :obj:`int8` codes :math:`\mathbf{c}_j` of the sources
    of every target node :math:`i` of a CSR graph, whose row :math:`i`
    holds the entries :math:`e \in [\mathrm{rowptr}_i,
    \mathrm{rowptr}_{i+1})` with sources :math:`j_e = \mathrm{col}_e`:

    .. math::
        \mathbf{h}_i = \sum_{e} \mathbf{c}_{j_e}, \qquad
        \mathbf{h}_i = \max_{e}\, \mathbf{c}_{j_e}, \qquad
        \mathbf{h}_i = \frac{1}{d_i}\sum_{e}
        \mathrm{fl}\big(w_e\,(\mathbf{c}_{j_e} + o)\big)

    Sums and maxima without weights are exact (:obj:`int32`
    accumulation). With weights, each product :math:`w_e (c + o)` is
    rounded to :obj:`float32` (no fused multiply-add) — it is then the
    dequantized value :math:`s\,(q - z)` a fake-quantized model computes
    for :math:`w_e = s`, :math:`o = -z` — and the products are summed in
    :obj:`float64`, in the order of the row, divided by the degree
    :math:`d_i` for :obj:`"mean"` (:math:`d_i = 1` for :obj:`"sum"`), and
    rounded once to :obj:`float32`. Summed in :obj:`float64`, values on a
    common grid add up exactly, in any order: the result is the one
    rounding of the exact sum that a model summing its dequantized
    messages in :obj:`float64` gets too (the quantized twins do in
    evaluation), so a value on a rounding boundary of the next quantizer
    falls on the same side in both. Rows without entries give 0; the
    caller, who knows the zero point, replaces them where 0 is no code.
    Inference only: the result carries no gradient.

    Args:
        codes (torch.Tensor): :obj:`int8` codes :math:`(N_{src}, F)`, row
            :math:`j` for source node :math:`j`.
        rowptr (torch.Tensor): :obj:`int64` row pointers :math:`(M + 1)` of
            the targets, non-decreasing from 0 to :math:`E`, as
            :meth:`torch_sparse.SparseTensor.csr` gives them.
        col (torch.Tensor): :obj:`int64` sources :math:`(E)` in
            :math:`[0, N_{src})`. Duplicates and self-loops are entries like
            any other.
        weight (torch.Tensor, optional): Finite :obj:`float32` factors
            :math:`(E)`, one per entry, for :obj:`reduce="sum"` (needed for
            :obj:`"mean"`). (default: :obj:`None`)
        reduce (str, optional): :obj:`"sum"`, :obj:`"mean"` or
            :obj:`"max"`. (default: :obj:`"sum"`)
        path (str, optional): :obj:`"native"`, :obj:`"torch"` or
            :obj:`None`, the fastest one present for the device (see
            :func:`~pyg_qgnn.deploy.backend`). (default: :obj:`None`)
        offset (int, optional): :math:`o`, added to every code of a
            weighted sum or mean before its product. (default: :obj:`0`)

    Returns:
        :obj:`int32` sums or maxima :math:`(M, F)`, or :obj:`float32`
        weighted sums or means :math:`(M, F)`.
    """
    if reduce not in AGGREGATE_REDUCES:
        raise ValueError(f"'reduce' must be one of {AGGREGATE_REDUCES} "
                         f"(got {reduce!r})")
    if path is not None and path not in AGGREGATE_PATHS:
        raise ValueError(f"'path' must be None or one of {AGGREGATE_PATHS} "
                         f"(got {path!r})")
    codes, rowptr, col, weight = _check_graph(codes, rowptr, col, weight)
    if reduce == 'max' and weight is not None:
        raise ValueError("'weight' must be None for reduce='max' (factors "
                         "scale a sum)")
    if reduce == 'sum' and weight is None and rowptr.numel() > 1:
        degree = int(rowptr.diff().max())
        if degree > MAX_EXACT_DEGREE:
            raise ValueError(f"'rowptr' has a row of {degree} entries; int32 "
                             f"sums of int8 codes are exact up to "
                             f"{MAX_EXACT_DEGREE}")
    if reduce == 'mean' and weight is None:
        raise ValueError("reduce='mean' needs 'weight' (the factors of the "
                         "codes, e.g. their step)")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"'offset' must be an int (got "
                        f"{type(offset).__name__})")
    if abs(offset) > MAX_OFFSET:
        raise ValueError(f"'offset' must be in [-{MAX_OFFSET}, "
                         f"{MAX_OFFSET}] (got {offset})")
    if offset and weight is None:
        raise ValueError("'offset' applies to weighted sums only (got "
                         "weight=None)")
    mode = _MAX if reduce == 'max' else _WEIGHTED_MEAN if reduce == 'mean' \
        else _SUM if weight is None else _WEIGHTED_SUM
    on_cpu = codes.device.type == 'cpu'
    if path is None:
        path = backend().int8_aggregate if on_cpu else 'torch'
    if path == 'native':
        if not on_cpu:
            raise ValueError(f"path='native' takes CPU tensors (got device "
                             f"{codes.device})")
        return _native_aggregate(codes, rowptr, col, weight, mode, offset)
    if mode in (_WEIGHTED_SUM, _WEIGHTED_MEAN):
        return _torch_weighted_sum(codes, rowptr, col, weight, offset,
                                   mode == _WEIGHTED_MEAN)
    return _torch_reduce(codes, rowptr, col, mode)


def _check_graph(codes: Tensor, rowptr: Tensor, col: Tensor,
                 weight: Optional[Tensor]) -> Tuple[Tensor, ...]:
    r"""The inputs, contiguous, once their dtypes, shapes, devices and
    values fit (one vectorized pass over :obj:`rowptr` and :obj:`col`)."""
    _check_tensor(codes, 'codes', torch.int8, '(num_sources, features)', 2)
    device = codes.device
    _check_tensor(rowptr, 'rowptr', torch.int64, '(num_targets + 1,)', 1,
                  device)
    _check_tensor(col, 'col', torch.int64, '(num_entries,)', 1, device)
    if rowptr.numel() == 0:
        raise ValueError("'rowptr' must hold num_targets + 1 >= 1 entries "
                         "(got an empty tensor)")
    first, last, entries = int(rowptr[0]), int(rowptr[-1]), col.numel()
    if first != 0:
        raise ValueError(f"'rowptr' must start at 0 (got {first})")
    if last != entries:
        raise ValueError(f"'rowptr' must end at col.numel() = {entries} "
                         f"(got {last})")
    if rowptr.numel() > 1 and bool((rowptr.diff() < 0).any()):
        raise ValueError("'rowptr' must be non-decreasing (one run of "
                         "entries per target row)")
    if entries:
        low, high = (int(v) for v in torch.aminmax(col))
        if low < 0 or high >= codes.size(0):
            raise ValueError(f"'col' must hold source indices in "
                             f"[0, {codes.size(0)}) (got values in "
                             f"[{low}, {high}])")
    if weight is not None:
        _check_tensor(weight, 'weight', torch.float32, f'({entries},)', 1,
                      device)
        if weight.numel() != entries:
            raise ValueError(f"'weight' must have shape ({entries},), one "
                             f"factor per entry of 'col' (got "
                             f"{tuple(weight.shape)})")
        if not bool(torch.isfinite(weight).all()):
            raise ValueError("'weight' contains NaN or Inf values; expected "
                             "finite factors")
        weight = weight.detach().contiguous()
    return codes.contiguous(), rowptr.contiguous(), col.contiguous(), weight


def _check_tensor(value: Tensor, name: str, dtype: torch.dtype, shape: str,
                  dim: int, device: Optional[torch.device] = None):
    if not isinstance(value, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor (got "
                        f"{type(value).__name__})")
    if value.dtype != dtype:
        raise TypeError(f"'{name}' must have dtype {dtype} (got "
                        f"{value.dtype})")
    if value.dim() != dim:
        raise ValueError(f"'{name}' must have shape {shape} (got "
                         f"{tuple(value.shape)})")
    if device is not None and value.device != device:
        raise ValueError(f"'{name}' must be on the device of 'codes' "
                         f"({device}; got {value.device})")


# Pure PyTorch ################################################################


def _torch_reduce(codes: Tensor, rowptr: Tensor, col: Tensor,
                  mode: int) -> Tensor:
    r"""Exact :obj:`int32` sums or maxima, a chunk of whole rows at a time
    (a row's maximum must be reduced within one scatter)."""
    num_rows, features = rowptr.numel() - 1, codes.size(1)
    out = torch.zeros(num_rows, features, dtype=torch.int32,
                      device=codes.device)
    for begin, end in _row_chunks(rowptr, max(1, _CHUNK // max(1, features))):
        first, last = int(rowptr[begin]), int(rowptr[end])
        if first == last:
            continue
        row = torch.repeat_interleave(
            torch.arange(end - begin, device=codes.device),
            rowptr[begin:end + 1].diff(), output_size=last - first)
        values = codes.index_select(0, col[first:last]).to(torch.int32)
        if mode == _SUM:
            out[begin:end].index_add_(0, row, values)
        else:  # rows without entries keep their 0
            out[begin:end].scatter_reduce_(
                0, row.view(-1, 1).expand_as(values), values, 'amax',
                include_self=False)
    return out


def _row_chunks(rowptr: Tensor, entries: int) -> Iterator[Tuple[int, int]]:
    r"""Consecutive row ranges :obj:`[begin, end)` covering all rows, each
    of at most :obj:`entries` entries or a single longer row."""
    num_rows, begin = rowptr.numel() - 1, 0
    while begin < num_rows:
        bound = rowptr[begin] + entries
        end = int(torch.searchsorted(rowptr, bound, right=True)) - 1
        end = min(num_rows, max(end, begin + 1))
        yield begin, end
        begin = end


def _torch_weighted_sum(codes: Tensor, rowptr: Tensor, col: Tensor,
                        weight: Tensor, offset: int = 0,
                        mean: bool = False) -> Tensor:
    r"""The weighted sums in the order of each row: step :math:`k` adds the
    :math:`k`-th entry of every row that has one (the :obj:`float32`
    product, then a :obj:`float64` sum), :math:`O(\max \deg)` steps."""
    num_rows, features = rowptr.numel() - 1, codes.size(1)
    degree = rowptr.diff()
    # Rows by decreasing degree: the rows with a k-th entry are a prefix.
    order = torch.argsort(degree, descending=True, stable=True)
    start = rowptr[:-1][order]
    max_degree = int(degree.max()) if num_rows else 0
    # rows_with[k]: how many rows have more than k entries.
    at_least = torch.bincount(degree, minlength=max_degree + 1)
    rows_with = at_least.flip(0).cumsum(0).flip(0)[1:].tolist()
    total = torch.zeros(num_rows, features, dtype=torch.float64,
                        device=codes.device)
    for k, rows in enumerate(rows_with):
        entry = start[:rows] + k
        shifted = codes.index_select(0, col[entry]).to(torch.int32) + offset
        total[:rows] += weight[entry].view(-1, 1) * shifted.float()
    if mean:
        total /= degree[order].clamp(min=1).view(-1, 1)
    return torch.empty(num_rows, features, device=codes.device).index_copy_(
        0, order, total.float())


# The C kernel ################################################################


def _native_aggregate(codes: Tensor, rowptr: Tensor, col: Tensor,
                      weight: Optional[Tensor], mode: int,
                      offset: int = 0) -> Tensor:
    kernel = aggregate_kernel()
    if kernel is None:
        raise RuntimeError("path='native' needs a C compiler (cc or $CC); "
                           "use path=None")
    num_rows = rowptr.numel() - 1
    dtype = torch.float32 if mode in (_WEIGHTED_SUM, _WEIGHTED_MEAN) \
        else torch.int32
    out = torch.empty(num_rows, codes.size(1), dtype=dtype)
    status = kernel(codes.data_ptr(), rowptr.data_ptr(), col.data_ptr(),
                    None if weight is None else weight.data_ptr(), num_rows,
                    codes.size(1), mode, int(offset), torch.get_num_threads(),
                    out.data_ptr())
    if status != 0:
        raise RuntimeError(f'the integer aggregation kernel failed (status '
                           f'{status})')
    return out


#: Rows [0, rows) of the CSR (rowptr, col) over the int8 codes
#: (n, features), written to out (rows, features): int32 sums (mode 0),
#: float sums of weight[e] * code in row order (mode 1; the product is
#: rounded, then added, which needs -ffp-contract=off), or int32 maxima
#: (mode 2); 0 for empty rows. The integer modes take four entries at a
#: time (exact in any order). A row's output is its accumulator: restrict
#: lets gcc vectorize the loop over features. The gathers wait on memory,
#: so each entry prefetches the source row AHEAD entries on, across row
#: ends (3-7x faster on the graph of the module notes).
_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>

#define AHEAD 16

/* Always inlined: gcc deems a function that only prefetches free of
   effects and drops its calls. */
static inline __attribute__((always_inline)) void fetch_ahead(
        const int8_t *codes, const int64_t *col, int64_t e, int64_t stop,
        int64_t features) {
    if (e + AHEAD < stop) {  /* a row's first and last byte */
        const int8_t *row = codes + col[e + AHEAD] * features;
        __builtin_prefetch(row);
        __builtin_prefetch(row + features - 1);
    }
}

static void sum_row(const int8_t *restrict codes, const int64_t *restrict col,
                    int64_t first, int64_t last, int64_t stop,
                    int64_t features, int32_t *restrict acc) {
    for (int64_t f = 0; f < features; ++f) acc[f] = 0;
    int64_t e = first;
    for (; e + 4 <= last; e += 4) {
        for (int64_t ahead = e; ahead < e + 4; ++ahead)
            fetch_ahead(codes, col, ahead, stop, features);
        const int8_t *restrict a = codes + col[e] * features;
        const int8_t *restrict b = codes + col[e + 1] * features;
        const int8_t *restrict c = codes + col[e + 2] * features;
        const int8_t *restrict d = codes + col[e + 3] * features;
        for (int64_t f = 0; f < features; ++f)
            acc[f] += ((int32_t)a[f] + b[f]) + ((int32_t)c[f] + d[f]);
    }
    for (; e < last; ++e) {
        fetch_ahead(codes, col, e, stop, features);
        const int8_t *restrict a = codes + col[e] * features;
        for (int64_t f = 0; f < features; ++f) acc[f] += a[f];
    }
}

static void max_row(const int8_t *restrict codes, const int64_t *restrict col,
                    int64_t first, int64_t last, int64_t stop,
                    int64_t features, int32_t *restrict acc) {
    for (int64_t f = 0; f < features; ++f)
        acc[f] = first < last ? INT8_MIN : 0;
    int64_t e = first;
    for (; e + 4 <= last; e += 4) {
        for (int64_t ahead = e; ahead < e + 4; ++ahead)
            fetch_ahead(codes, col, ahead, stop, features);
        const int8_t *restrict a = codes + col[e] * features;
        const int8_t *restrict b = codes + col[e + 1] * features;
        const int8_t *restrict c = codes + col[e + 2] * features;
        const int8_t *restrict d = codes + col[e + 3] * features;
        for (int64_t f = 0; f < features; ++f) {
            const int8_t ab = a[f] > b[f] ? a[f] : b[f];
            const int8_t cd = c[f] > d[f] ? c[f] : d[f];
            const int8_t m = ab > cd ? ab : cd;
            acc[f] = m > acc[f] ? m : acc[f];
        }
    }
    for (; e < last; ++e) {
        fetch_ahead(codes, col, e, stop, features);
        const int8_t *restrict a = codes + col[e] * features;
        for (int64_t f = 0; f < features; ++f)
            acc[f] = a[f] > acc[f] ? a[f] : acc[f];
    }
}

static void weighted_row(const int8_t *restrict codes,
                         const int64_t *restrict col,
                         const float *restrict weight, int64_t first,
                         int64_t last, int64_t stop, int64_t features,
                         int offset, int mean, double *restrict acc,
                         float *restrict out) {
    for (int64_t f = 0; f < features; ++f) acc[f] = 0.0;
    for (int64_t e = first; e < last; ++e) {
        fetch_ahead(codes, col, e, stop, features);
        const int8_t *restrict a = codes + col[e] * features;
        const float w = weight[e];
        for (int64_t f = 0; f < features; ++f)
            acc[f] += (double)(w * (float)(a[f] + offset));
    }
    const double count = (mean && last > first) ? (double)(last - first) : 1.0;
    for (int64_t f = 0; f < features; ++f)
        out[f] = (float)(acc[f] / count);
}

int aggregate_codes(const int8_t *codes, const int64_t *rowptr,
                    const int64_t *col, const float *weight, int64_t rows,
                    int64_t features, int mode, int offset, int threads,
                    void *out) {
    if (mode < 0 || mode > 3) return -1;
    if (rows == 0 || features == 0) return 0;
    const int64_t stop = rowptr[rows];  /* prefetches run on across rows */
    if (mode >= 1 && mode != 2 && stop > 0 && !weight) return -1;
    int failed = 0;
    #pragma omp parallel num_threads(threads) reduction(|:failed)
    {
        double *scratch = 0;  /* a weighted row's float64 accumulators */
        if (mode == 1 || mode == 3) {
            scratch = malloc(features * sizeof(double));
            failed |= !scratch;
        }
        #pragma omp for schedule(dynamic, 256)
        for (int64_t i = 0; i < rows; ++i) {
            const int64_t first = rowptr[i], last = rowptr[i + 1];
            if (mode == 0)
                sum_row(codes, col, first, last, stop, features,
                        (int32_t *)out + i * features);
            else if (mode == 2)
                max_row(codes, col, first, last, stop, features,
                        (int32_t *)out + i * features);
            else if (scratch)
                weighted_row(codes, col, weight, first, last, stop, features,
                             offset, mode == 3, scratch,
                             (float *)out + i * features);
        }
        free(scratch);
    }
    return failed ? -2 : 0;
}
"""

#: OpenMP where the compiler has it (else one thread); no fused
#: multiply-add, which would round a weighted sum differently.
_FLAGS = ['-fopenmp', '-ffp-contract=off']


@functools.lru_cache(maxsize=None)
def aggregate_kernel() -> Optional[Callable]:
    r"""The C kernel of :func:`aggregate_codes`, built on first use, or
    :obj:`None` where it cannot be built."""
    return native_function('aggregate_codes', _SOURCE, [
        ctypes.c_void_p] * 4 + [ctypes.c_int64] * 2 + [ctypes.c_int] * 3 + [
        ctypes.c_void_p], _FLAGS)
