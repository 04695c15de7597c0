r"""Native kernels on bit-packed :math:`\pm 1` node features (one bit per
value, the layout of :func:`~pyg_qgnn.quantizers.binary.pack_signs`), as
the deployed :class:`~pyg_qgnn.nn.BinSAGEConv` needs them between binary
layers, so features never leave their packed form:

* :func:`aggregate_bits`: per target node, the number :math:`n_c` of its
  sources whose bit :math:`c` is set gives the sum :math:`2 n_c - d`, the
  mean :math:`(2 n_c - d) / \max(d, 1)` or the maximum of their
  :math:`\pm 1` values (:math:`d` the degree), computed in float32 as the
  trained layer computes it from the same exact integers, and compared with
  one threshold per channel; the results are packed bits again.
  With AVX-512 a source row adds to 64 byte counters in one masked add.
* :func:`popcount_matmul`: the binary product
  :math:`\mathbf{h}\,\mathrm{sign}(\mathbf{W})^{\top}` as :math:`d - 2\,
  \mathrm{popcount}(\mathbf{h} \oplus \mathbf{w})` on 64-bit words
  (AVX-512 :obj:`VPOPCNTQ`, eight outputs per instruction), returned as
  :obj:`int32` or compared with per-output thresholds and packed.
* :func:`threshold_pack`: float rows compared with per-channel thresholds
  and packed (the output signs of a layer with real inputs).

Rows given to the two first kernels are padded with zero bits to whole
64-bit words (:func:`words`): padding bits of a feature row and of a weight
are both zero, so they add nothing to a popcount. The kernels are built on
first use (:func:`~pyg_qgnn.deploy.backend.native_function`); where no C
compiler is present :func:`packed_kernels` is :obj:`None` and the deployed
layer takes its :obj:`int8` path, which gives the same bits (tested).
"""
import ctypes
import functools
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_qgnn.deploy.backend import compile_native
from pyg_qgnn.deploy.binary_ops import pack_codes
from pyg_qgnn.deploy.integer_graph import CSR

#: The aggregations of :func:`aggregate_bits`, by kernel mode.
BIT_REDUCES = {'sum': 0, 'mean': 1, 'max': 2}

#: The largest degree whose sum of :math:`\pm 1` values is exact in float32.
MAX_EXACT_DEGREE = 1 << 24

_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define HAVE_AVX512BW 1
#endif
#if defined(HAVE_AVX512BW) && defined(__AVX512VPOPCNTDQ__)
#define HAVE_VPOPCNTQ 1
#endif

#define AHEAD 16
/* Channel groups of 64 counted at once (per pass over a row's sources). */
#define GROUPS 8

/* The 64 bits of group g of a packed row of `bytes` bytes, zero beyond. */
static inline uint64_t load_group(const uint8_t *row, int64_t bytes,
                                  int64_t g) {
    uint64_t word = 0;
    const int64_t start = 8 * g;
    if (start + 8 <= bytes) memcpy(&word, row + start, 8);
    else if (start < bytes) memcpy(&word, row + start, bytes - start);
    return word;
}

/* The aggregate of one channel from n set bits among d sources, in float32
   as the trained layer computes it from the exact sum 2n - d. */
static inline float aggregate_value(int64_t n, int64_t d, int mode) {
    if (mode == 0) return (float)(2 * n - d);
    if (mode == 1) return (float)(2 * n - d) / (float)(d > 0 ? d : 1);
    return d == 0 ? 0.0f : (n > 0 ? 1.0f : -1.0f);
}

/* Counts, for the groups [g0, g0 + ng) of target row [first, last), the
   sources with each bit set: counts[64 * (g - g0) + c]. */
static void count_bits(const uint8_t *src, int64_t src_bytes,
                       const int64_t *col, int64_t first, int64_t last,
                       int64_t stop, int64_t g0, int64_t ng,
                       int32_t *counts) {
#ifdef HAVE_AVX512BW
    const __m512i one = _mm512_set1_epi8(1);
    __m512i bytes[GROUPS], wide[GROUPS][4];
    for (int64_t g = 0; g < ng; ++g) {
        bytes[g] = _mm512_setzero_si512();
        for (int j = 0; j < 4; ++j) wide[g][j] = _mm512_setzero_si512();
    }
    int pending = 0;
    for (int64_t e = first; e < last; ++e) {
        if (e + AHEAD < stop)
            __builtin_prefetch(src + col[e + AHEAD] * src_bytes + 8 * g0);
        const uint8_t *row = src + col[e] * src_bytes;
        for (int64_t g = 0; g < ng; ++g)  /* +1 in byte c where bit c */
            bytes[g] = _mm512_mask_add_epi8(
                bytes[g], (__mmask64)load_group(row, src_bytes, g0 + g),
                bytes[g], one);
        if (++pending == 255 || e + 1 == last) {  /* before uint8 wraps */
            for (int64_t g = 0; g < ng; ++g) {
                for (int j = 0; j < 4; ++j)
                    wide[g][j] = _mm512_add_epi32(wide[g][j],
                        _mm512_cvtepu8_epi32(
                            _mm512_extracti32x4_epi32(bytes[g], j)));
                bytes[g] = _mm512_setzero_si512();
            }
            pending = 0;
        }
    }
    for (int64_t g = 0; g < ng; ++g)
        for (int j = 0; j < 4; ++j)
            _mm512_storeu_si512(counts + 64 * g + 16 * j, wide[g][j]);
#else
    memset(counts, 0, 64 * ng * sizeof(int32_t));
    for (int64_t e = first; e < last; ++e) {
        if (e + AHEAD < stop)
            __builtin_prefetch(src + col[e + AHEAD] * src_bytes + 8 * g0);
        const uint8_t *row = src + col[e] * src_bytes;
        for (int64_t g = 0; g < ng; ++g) {
            const uint64_t word = load_group(row, src_bytes, g0 + g);
            for (int c = 0; c < 64; ++c)
                counts[64 * g + c] += (int32_t)((word >> c) & 1);
        }
    }
#endif
}

/* For every target row i of the CSR (rowptr, col) over packed source rows
   src (src_bytes each, `channels` bits), the word-padded packed row
   out + i * out_stride of bits [aggregate_c >= thr_c]. */
int aggregate_bits(const int64_t *rowptr, const int64_t *col,
                   const uint8_t *src, int64_t src_bytes, int64_t rows,
                   int64_t channels, int mode, const float *thr,
                   uint8_t *out, int64_t out_stride, int threads) {
    if (mode < 0 || mode > 2) return -1;
    if (rows == 0 || channels == 0) return 0;
    const int64_t stop = rowptr[rows], groups = (channels + 63) / 64;
    #pragma omp parallel for schedule(dynamic, 256) num_threads(threads)
    for (int64_t i = 0; i < rows; ++i) {
        int32_t counts[64 * GROUPS];
        const int64_t first = rowptr[i], last = rowptr[i + 1];
        const int64_t degree = last - first;
        for (int64_t g0 = 0; g0 < groups; g0 += GROUPS) {
            const int64_t ng = groups - g0 < GROUPS ? groups - g0 : GROUPS;
            count_bits(src, src_bytes, col, first, last, stop, g0, ng,
                       counts);
            for (int64_t g = 0; g < ng; ++g) {
                const int64_t base = 64 * (g0 + g);
                const int64_t width = channels - base < 64 ?
                    channels - base : 64;
                uint64_t word = 0;
                for (int64_t c = 0; c < width; ++c)
                    word |= (uint64_t)(aggregate_value(
                        counts[64 * g + c], degree, mode) >= thr[base + c])
                        << c;
                memcpy(out + i * out_stride + 8 * (g0 + g), &word, 8);
            }
        }
    }
    return 0;
}

/* out[i, o] = bits - 2 popcount(a_i ^ w_o) for rows a (m, words) and the
   weights in blocks of 8 outputs, wt[(b * words + k) * 8 + l] = word k of
   output 8b + l (zero rows past n); written as int32 (out32, m x n) or as
   packed bits [out >= thr_o] ^ flip_o (out_bits, out_bytes per row; thr
   and the flip bits padded to whole blocks). */
int popcount_matmul(const uint64_t *a, int64_t m, int64_t words,
                    const uint64_t *wt, int64_t n, int64_t bits,
                    const int64_t *thr, const uint8_t *flip_bits,
                    int32_t *out32, uint8_t *out_bits, int64_t out_bytes,
                    int threads) {
    const int64_t blocks = (n + 7) / 8;
    if (!out32 && (!out_bits || !thr || !flip_bits)) return -1;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < m; ++i) {
        const uint64_t *ai = a + i * words;
        for (int64_t b = 0; b < blocks; ++b) {
            const uint64_t *wb = wt + b * words * 8;
            const int64_t lanes = n - 8 * b < 8 ? n - 8 * b : 8;
            int64_t dot[8];
#ifdef HAVE_VPOPCNTQ
            __m512i ones = _mm512_setzero_si512();
            for (int64_t k = 0; k < words; ++k)
                ones = _mm512_add_epi64(ones, _mm512_popcnt_epi64(
                    _mm512_xor_si512(_mm512_set1_epi64((long long)ai[k]),
                                     _mm512_loadu_si512(wb + 8 * k))));
            _mm512_storeu_si512(dot, _mm512_sub_epi64(
                _mm512_set1_epi64(bits), _mm512_slli_epi64(ones, 1)));
#else
            for (int l = 0; l < 8; ++l) {
                int64_t count = 0;
                for (int64_t k = 0; k < words; ++k)
                    count += __builtin_popcountll(ai[k] ^ wb[8 * k + l]);
                dot[l] = bits - 2 * count;
            }
#endif
            if (out32) {
                for (int64_t l = 0; l < lanes; ++l)
                    out32[i * n + 8 * b + l] = (int32_t)dot[l];
            } else {
                unsigned byte = 0;
                for (int64_t l = 0; l < lanes; ++l)
                    byte |= (unsigned)(dot[l] >= thr[8 * b + l]) << l;
                byte ^= flip_bits[b];
                if (lanes < 8) byte &= (1u << lanes) - 1;
                out_bits[i * out_bytes + b] = (uint8_t)byte;
            }
        }
    }
    return 0;
}

/* Bits [x_ic >= thr_c] ^ flip_c of float rows x (m, n), packed into rows
   of out_bytes (flip bits padded to whole bytes). */
int threshold_pack(const float *x, int64_t m, int64_t n, const float *thr,
                   const uint8_t *flip_bits, uint8_t *out,
                   int64_t out_bytes, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < m; ++i) {
        const float *xi = x + i * n;
        for (int64_t b = 0; b < out_bytes; ++b) {
            const int64_t lanes = n - 8 * b < 8 ? n - 8 * b : 8;
            unsigned byte = 0;
            for (int64_t l = 0; l < lanes; ++l)
                byte |= (unsigned)(xi[8 * b + l] >= thr[8 * b + l]) << l;
            byte ^= flip_bits[b];
            if (lanes < 8) byte &= (1u << lanes) - 1;
            out[i * out_bytes + b] = (uint8_t)byte;
        }
    }
    return 0;
}
"""

#: OpenMP where the compiler has it; no fused multiply-add.
_FLAGS = ['-fopenmp', '-ffp-contract=off']


class PackedKernels(NamedTuple):
    aggregate_bits: Callable
    popcount_matmul: Callable
    threshold_pack: Callable


def packed_kernels() -> Optional[PackedKernels]:
    r"""The C kernels of this module, built on first use, or :obj:`None`
    where they cannot be built."""
    return build_kernels(tuple(_FLAGS))


@functools.lru_cache(maxsize=None)
def build_kernels(flags: tuple) -> Optional[PackedKernels]:
    r"""The kernels built with the extra compiler :obj:`flags` (e.g.
    :obj:`"-mno-avx512f"` for the portable loops)."""
    library = compile_native('packed_bits', _SOURCE, list(flags))
    if library is None:
        return None
    p, i64, i = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    signatures = {
        'aggregate_bits': [p, p, p, i64, i64, i64, i, p, p, i64, i],
        'popcount_matmul': [p, i64, i64, p, i64, i64, p, p, p, p, i64, i],
        'threshold_pack': [p, i64, i64, p, p, p, i64, i],
    }
    functions = {}
    for name, argtypes in signatures.items():
        function = getattr(library, name)
        function.restype, function.argtypes = ctypes.c_int, argtypes
        functions[name] = function
    return PackedKernels(**functions)


def words(channels: int) -> int:
    r"""64-bit words of a word-padded packed row of :obj:`channels`
    bits."""
    return -(-channels // 64)


def pad_to_words(packed: Tensor, channels: int) -> Tensor:
    r"""Packed rows :math:`(*, \lceil C / 8 \rceil)` padded with zero bytes
    to :obj:`8 * words(C)` bytes."""
    return F.pad(packed, (0, 8 * words(channels) - packed.size(-1)))


def flip_bits(flips: Optional[Tensor], channels: int) -> Tensor:
    r"""Bit :math:`c` set where :obj:`flips[c] < 0`, packed, padded to whole
    blocks of 8 (no flips: zeros)."""
    out = torch.zeros(8 * -(-channels // 8), dtype=torch.uint8)
    if flips is not None:
        out[:channels] = (flips.cpu() < 0).to(torch.uint8)
    return (out.view(-1, 8) << torch.arange(8, dtype=torch.uint8)).sum(
        -1, dtype=torch.uint8)


def weight_blocks(parts: list) -> Tensor:
    r"""The layout of :func:`popcount_matmul`'s weights from the
    :obj:`int8` :math:`\pm 1` column blocks :obj:`parts` (each
    :math:`(N, C_p)`, word-padded one after the other as the feature rows
    are): :obj:`int64` :math:`(\lceil N / 8 \rceil, W, 8)`."""
    rows = torch.cat([pad_to_words(pack_codes(part), part.size(1))
                      for part in parts], dim=1)
    n = rows.size(0)
    rows = F.pad(rows, (0, 0, 0, -n % 8)).contiguous().view(torch.int64)
    return rows.view(-1, 8, rows.size(1)).transpose(1, 2).contiguous()


def aggregate_bits(packed: Tensor, csr: CSR, channels: int, reduce: str,
                   thresholds: Tensor, out: Tensor) -> Tensor:
    r"""Writes into :obj:`out` (:obj:`uint8` rows of at least
    :obj:`8 * words(channels)` bytes, a view with unit column stride) the
    packed bits :math:`[\mathrm{aggr}_c \ge u_c]` of every target of
    :obj:`csr` over the packed source rows :obj:`packed` :math:`(N_s,
    \lceil C / 8 \rceil)`; :obj:`reduce` is :obj:`"sum"`, :obj:`"mean"` or
    :obj:`"max"` and :obj:`thresholds` float32 :math:`(C)`."""
    kernels = _kernels()
    packed = packed.contiguous()
    thresholds = thresholds.to(torch.float32).contiguous()
    if out.stride(1) != 1 or out.size(1) < 8 * words(channels) or \
            out.size(0) != csr.num_targets:
        raise ValueError(f"'out' must be a row-major uint8 view of "
                         f"{csr.num_targets} rows of at least "
                         f"{8 * words(channels)} bytes")
    status = kernels.aggregate_bits(
        csr.rowptr.data_ptr(), csr.col.data_ptr(), packed.data_ptr(),
        packed.size(1), csr.num_targets, channels, BIT_REDUCES[reduce],
        thresholds.data_ptr(), out.data_ptr(), out.stride(0),
        torch.get_num_threads())
    if status != 0:
        raise RuntimeError(f'the packed aggregation kernel failed (status '
                           f'{status})')
    return out


def popcount_matmul(rows: Tensor, blocks: Tensor, num_bits: int,
                    out_channels: int, thresholds: Optional[Tensor] = None,
                    flips: Optional[Tensor] = None) -> Tensor:
    r"""The :math:`\pm 1` product of the word-padded packed :obj:`rows`
    :math:`(M, 8W)` and the weights :obj:`blocks` (:func:`weight_blocks`)
    of :obj:`num_bits` real bits: :obj:`int32` :math:`(M, N)`, or with
    integer :obj:`thresholds` :math:`(N)` (and optional :obj:`flips`) the
    packed bits :math:`[\mathrm{out} \ge u] \oplus [f < 0]`,
    :obj:`uint8` :math:`(M, \lceil N / 8 \rceil)`."""
    kernels = _kernels()
    rows = rows.contiguous()
    m, n = rows.size(0), out_channels
    threads = torch.get_num_threads()
    if thresholds is None:
        out = torch.empty(m, n, dtype=torch.int32)
        arguments = (None, None, out.data_ptr(), None, 0)
    else:
        padded = torch.zeros(8 * blocks.size(0), dtype=torch.int64)
        padded[:n] = thresholds
        flip = flip_bits(flips, n)
        out = torch.empty(m, -(-n // 8), dtype=torch.uint8)
        arguments = (padded.data_ptr(), flip.data_ptr(), None,
                     out.data_ptr(), out.size(1))
    if not out.numel():  # no rows (an empty tensor has no data pointer)
        return out
    status = kernels.popcount_matmul(
        rows.data_ptr(), m, rows.size(1) // 8, blocks.data_ptr(), n,
        num_bits, *arguments, threads)
    if status != 0:
        raise RuntimeError(f'the popcount matmul kernel failed (status '
                           f'{status})')
    return out


def threshold_pack(x: Tensor, thresholds: Tensor,
                   flips: Optional[Tensor] = None) -> Tensor:
    r"""Packed bits :math:`[x_{ic} \ge u_c] \oplus [f_c < 0]` of float32
    rows :obj:`x` :math:`(M, C)`: :obj:`uint8` :math:`(M, \lceil C / 8
    \rceil)`."""
    kernels = _kernels()
    x = x.contiguous()
    m, n = x.shape
    thresholds = thresholds.to(torch.float32).contiguous()
    flip = flip_bits(flips, n)
    out = torch.empty(m, -(-n // 8), dtype=torch.uint8)
    if not out.numel():
        return out
    kernels.threshold_pack(x.data_ptr(), m, n, thresholds.data_ptr(),
                           flip.data_ptr(), out.data_ptr(), out.size(1),
                           torch.get_num_threads())
    return out


def _kernels() -> PackedKernels:
    kernels = packed_kernels()
    if kernels is None:
        raise RuntimeError('the packed-bit kernels need a C compiler (cc or '
                           '$CC)')
    return kernels
