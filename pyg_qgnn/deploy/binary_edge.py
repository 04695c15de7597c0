r"""The fast exact path of the deployed RF edge convolution
(:class:`~pyg_qgnn.deploy.DeployedDynamicBinEdgeConv`, `Bahri et al., 2021
<https://arxiv.org/abs/2012.15823>`_, §4.1): the dynamic graph of its
trained twin rebuilt by a selection kernel (:func:`twin_knn_graph`), and
the binary edge products with the batch normalization and sign folded into
thresholds and split into a node and an edge part
(:func:`threshold_products`).

Both give exactly what the general path gives: the same neighbours (the
twin's float distances, with its own :func:`torch.topk` wherever a tie
makes the choice ambiguous) and the same integer products.
"""
import ctypes
import functools
import sys
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.typing import OptTensor, PairTensor
from torch_geometric.utils import scatter

from pyg_qgnn.deploy.backend import native_function, parallel_map
from pyg_qgnn.deploy.binary_ops import (
    check_finite_features,
    matmul_codes,
    pack_codes,
    threshold_codes,
)
from pyg_qgnn.nn.conv.knn_graph import KNNGraph, check_batch

#: Edges per chunk of threshold_products without its kernel: a chunk's codes
#: and products stay in cache (one thread of an AVX-512 CPU, 4096 points,
#: k = 20: 4x faster than unchunked at 128 -> 256 channels, 5x at 64 ->
#: 128). The kernel is 3-4x faster still (16384 points, one thread: 53 ms
#: against 196 ms for the three binary layers of DGCNN).
_EDGE_CHUNK = 4096

#: The kernel packs signs with AVX-512 compare masks where compiled with
#: them (1), else bit by bit (0, also the reference the tests compare).
_EDGE_VECTOR = 1


def threshold_products(x: PairTensor, edge_index: Tensor, weight: Tensor,
                       thresholds: Tuple[Tensor, Tensor], directions: Tensor,
                       group: Optional[int] = None) -> Tensor:
    r"""Per target node, the largest binary product (the smallest where
    :obj:`directions` is :obj:`-1`) of its edges,

    .. math::
        \mathrm{sign}(\mathbf{\Theta}) \circledast \mathbf{s}(\mathbf{x}_i
        \,\Vert\, \mathbf{x}_j - \mathbf{x}_i) =
        \mathbf{\Theta}_a^{\pm} \mathbf{s}_a(\mathbf{x}_i) +
        \mathbf{\Theta}_b^{\pm} \mathbf{s}_b(\mathbf{x}_j - \mathbf{x}_i)

    with :math:`\mathbf{s}` the :func:`~pyg_qgnn.deploy.binary_ops.
    threshold_codes` of :obj:`thresholds`: the node part once per target,
    plus the largest edge part, exact in integers. The flips of the
    thresholds fold into the columns of the :obj:`int8` :obj:`weight`
    codes :math:`(F_{out}, 2 F_{in})`, the directions into its rows, so an
    edge costs a subtraction, a comparison and a binary product of width
    :math:`F_{in}`. :obj:`group` as in :func:`largest_by_target`: grouped
    edges of :obj:`float32` features go through a C kernel (XOR and
    popcounts, the maximum kept per node, no intermediate tensors, no
    OpenMP regions to wait on in a loaded machine), else in chunks of
    about :obj:`_EDGE_CHUNK` edges, whose intermediates stay in cache.
    Nodes without edges get their node part only (zeroed later)."""
    upper, flips = thresholds
    channels, num_nodes = x[1].size(-1), x[1].size(0)
    weight = weight * flips
    node_dot = matmul_codes(threshold_codes(x[1], upper[:channels]),
                            weight[:, :channels].contiguous(), channels)
    directions = directions.to(torch.int8).view(-1, 1)
    edge_weight = (weight[:, channels:] * directions).contiguous()
    upper = upper[channels:]
    source, target = edge_index
    if group is None:
        diff = x[0].index_select(0, source) - x[1].index_select(0, target)
        products = matmul_codes(threshold_codes(diff, upper), edge_weight,
                                channels)
        best = largest_by_target(products, target, num_nodes)
    elif source.numel() != num_nodes * group:
        raise ValueError(f"'group' = {group} edges per node needs "
                         f"{num_nodes * group} edges (got {source.numel()})")
    elif edge_kernel() is not None and x[0].dtype == torch.float32 \
            and x[0].device.type == 'cpu' and sys.byteorder == 'little':
        best = _kernel_edge_max(x, source, upper, edge_weight, group)
    else:  # grouped by target: x_i broadcasts over the group, no gather
        best = torch.empty_like(node_dot)
        step = max(1, _EDGE_CHUNK // group)
        for start in range(0, num_nodes, step):
            end = min(num_nodes, start + step)
            x_j = x[0].index_select(0, source[start * group:end * group])
            diff = x_j.view(-1, group, channels) - x[1][start:end, None]
            products = matmul_codes(
                threshold_codes(diff.view(-1, channels), upper), edge_weight,
                channels)
            torch.amax(products.view(-1, group, products.size(-1)), dim=1,
                       out=best[start:end])
    return node_dot + best * directions.view(-1).to(best.dtype)


def _kernel_edge_max(x: PairTensor, source: Tensor, upper: Tensor,
                     weight: Tensor, group: int) -> Tensor:
    r"""The grouped edge part of :func:`threshold_products` by the C kernel,
    the targets shared among :func:`torch.get_num_threads` threads."""
    if source.numel() and not 0 <= int(source.min()) <= int(source.max()) \
            < x[0].size(0):
        raise IndexError(f"'edge_index' holds sources outside "
                         f"[0, {x[0].size(0)})")
    x_source, x_target = x[0].contiguous(), x[1].contiguous()
    source, upper = source.contiguous(), upper.contiguous()
    channels, num_nodes = x_target.size(1), x_target.size(0)
    # Weight rows as 64-bit words of packed bits (little-endian bytes),
    # word-major so that the kernel's loop over outputs vectorizes.
    packed = pack_codes(weight)
    packed = F.pad(packed, (0, -packed.size(1) % 8)).view(torch.int64)
    words = packed.t().contiguous()
    best = torch.empty(num_nodes, weight.size(0), dtype=torch.int32)
    kernel, threads = edge_kernel(), torch.get_num_threads()
    step = max(1, -(-num_nodes // threads))

    def run(begin: int) -> None:
        status = kernel(x_source.data_ptr(), x_target.data_ptr(),
                        source.data_ptr(), channels, group, upper.data_ptr(),
                        words.data_ptr(), weight.size(0), _EDGE_VECTOR,
                        begin, min(num_nodes, begin + step), best.data_ptr())
        if status != 0:
            raise MemoryError('the binary edge kernel is out of memory')

    parallel_map(run, list(range(0, num_nodes, step)), threads)
    return best


def largest_by_target(values: Tensor, target: Tensor, num_nodes: int,
                      group: Optional[int] = None) -> Tensor:
    r"""Per node, the channel-wise maximum of the :obj:`values` of its
    incoming edges (0 without edges); with :obj:`group`, every node has
    that many edges, grouped by target, and the maximum is a dense
    reduction."""
    if group is not None:
        return values.view(num_nodes, group, -1).amax(dim=1)
    return scatter(values, target, dim=0, dim_size=num_nodes, reduce='max')


# The dynamic graph ###########################################################


def twin_knn_graph(knn_graph: KNNGraph, x: Tensor,
                   batch: OptTensor = None) -> Tensor:
    r"""The graph :obj:`knn_graph(x, batch)` builds (:func:`~pyg_qgnn.nn.
    conv.knn_graph.knn_graph` on real features): the same neighbours of
    every point, grouped by point, though not in the same order among
    them, which an order-free aggregation (max) cannot tell.

    Where all clouds have the same size :math:`n \ge k` and the features
    are :obj:`float32` on the CPU, the distances are the twin's (its
    :func:`torch.bmm` Gram matrix and squared norms, then the same rounded
    operations) and a C kernel keeps the :math:`k` nearest in one pass
    instead of :func:`torch.topk`. A row whose :math:`k`-th and
    :math:`(k+1)`-th distances tie (or that holds a NaN) has more than one
    answer; such rows are selected again by the twin's :func:`torch.topk`.
    Elsewhere, and without a C compiler, :obj:`knn_graph` runs itself.

    Args:
        knn_graph (KNNGraph): The trained layer's graph builder.
        x (torch.Tensor): Finite point features :math:`(N, F)`.
        batch (torch.Tensor, optional): Sorted cloud index :math:`(N)`.

    Returns:
        :obj:`edge_index` :math:`(2, N k)`, neighbours first, grouped by
        point in increasing order.
    """
    k, num_points = knn_graph.k, x.size(0)
    kernel = select_kernel()
    if type(knn_graph) is not KNNGraph or kernel is None \
            or x.dtype != torch.float32 or x.device.type != 'cpu' \
            or x.dim() != 2 or num_points == 0:
        return knn_graph(x, batch)
    check_finite_features(x)  # the twin's checks and errors
    batch = check_batch(batch, num_points, x.device)
    counts = torch.bincount(batch)
    size = int(counts[0])
    if size < k or not bool((counts == size).all()):
        return knn_graph(x, batch)

    dense = x.detach().reshape(-1, size, x.size(1))
    if dense.data_ptr() % 64:  # the twin's padded copy is aligned, and a
        dense = dense.clone()  # GEMM may round differently when not
    gram = torch.bmm(dense, dense.transpose(1, 2))  # as pairwise_distances
    xor = knn_graph.metric == 'xor'
    norms = None if xor else dense.pow(2).sum(-1)
    nearest = torch.empty(num_points, k, dtype=torch.long)
    ambiguous = torch.empty(num_points, dtype=torch.uint8)
    step = -(-num_points // torch.get_num_threads())

    def select(begin: int) -> None:
        end = min(num_points, begin + step)
        status = kernel(gram.data_ptr(), None if xor else norms.data_ptr(),
                        size, k, int(xor), float(x.size(1)), begin, end,
                        nearest[begin].data_ptr(),
                        ambiguous[begin:].data_ptr())
        if status != 0:
            raise MemoryError('the kNN selection kernel is out of memory')

    parallel_map(select, list(range(0, num_points, step)),
         torch.get_num_threads())
    rows = ambiguous.nonzero().view(-1)
    if rows.numel():
        nearest[rows] = _twin_nearest(gram, norms, rows, k, x.size(1))
    offset = torch.arange(0, num_points, size).repeat_interleave(size)
    return torch.stack([(nearest + offset.view(-1, 1)).view(-1),
                        torch.arange(num_points).repeat_interleave(k)])


def _twin_nearest(gram: Tensor, norms: OptTensor, rows: Tensor, k: int,
                  channels: int) -> Tensor:
    r"""The twin's choice for the points :obj:`rows`: its distances
    (element by element the same operations; squared :math:`\ell_2` with
    :obj:`norms`, else :obj:`"xor"`) and its :func:`torch.topk`, which
    picks among ties row by row."""
    cloud, point = rows // gram.size(1), rows % gram.size(1)
    products = gram[cloud, point]
    if norms is None:
        dist = channels - products
    else:
        dist = (norms[cloud, point].unsqueeze(1) + norms[cloud]
                - 2 * products).clamp_(min=0)
    return dist.topk(k, dim=-1, largest=False).indices


#: For the points i in [begin, end) of clouds of n points (gram: (B, n, n),
#: norms: (B, n) squared norms, NULL for xor): the k nearest, as indices
#: within the cloud, in nearest[(i - begin) * k ...], and whether another
#: choice was as near (a tie at the k-th, or a NaN). The distances repeat
#: the rounded float operations of pairwise_distances: (|x_i|^2 + |x_j|^2)
#: - (g + g) clamped at 0 (2g = g + g exactly; no product, so nothing to
#: contract into an FMA), or d - g for xor.
_SELECT_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>

int select_nearest(const float *gram, const float *norms, int64_t n,
                   int64_t k, int xor, float channels, int64_t begin,
                   int64_t end, int64_t *nearest, uint8_t *ambiguous) {
    const int64_t keep = k < n ? k + 1 : k;  /* the k-th and the next */
    float *dist = malloc(n * sizeof(float));
    float *best = malloc(keep * sizeof(float));
    int64_t *index = malloc(keep * sizeof(int64_t));
    int64_t *candidates = malloc(64 * sizeof(int64_t));
    if (!dist || !best || !index || !candidates) {
        free(dist); free(best); free(index); free(candidates);
        return -1;
    }
    for (int64_t i = begin; i < end; ++i) {
        const float *g = gram + i * n;
        if (xor) {
            for (int64_t j = 0; j < n; ++j) dist[j] = channels - g[j];
        } else {
            const float *sq = norms + i / n * n, own = norms[i];
            for (int64_t j = 0; j < n; ++j) {
                const float d = (own + sq[j]) - (g[j] + g[j]);
                dist[j] = d < 0.0f ? 0.0f : d;  /* NaN stays NaN */
            }
        }
        int nan = 0;
        for (int64_t j = 0; j < n; ++j) nan |= dist[j] != dist[j];
        int64_t m = 0;
        /* The keep smallest, sorted by insertion, in blocks of 64: those
           under the current bound are gathered without branches first. */
        for (int64_t start = 0; start < n && !nan; start += 64) {
            const int64_t stop = start + 64 < n ? start + 64 : n;
            const float bound = m < keep ? 1.0f / 0.0f : best[keep - 1];
            int64_t c = 0;
            for (int64_t j = start; j < stop; ++j) {
                candidates[c] = j;
                c += m < keep || dist[j] < bound;
            }
            for (int64_t a = 0; a < c; ++a) {
                const int64_t j = candidates[a];
                const float d = dist[j];
                if (m == keep && !(d < best[keep - 1])) continue;
                int64_t p = m < keep ? m++ : keep - 1;
                for (; p > 0 && best[p - 1] > d; --p) {
                    best[p] = best[p - 1];
                    index[p] = index[p - 1];
                }
                best[p] = d;
                index[p] = j;
            }
        }
        /* One answer unless the k-th and the (k+1)-th distances tie. */
        ambiguous[i - begin] =
            (uint8_t)(nan || (keep > k && best[k - 1] == best[k]));
        for (int64_t a = 0; a < k; ++a)
            nearest[(i - begin) * k + a] = nan ? 0 : index[a];
    }
    free(dist);
    free(best);
    free(index);
    free(candidates);
    return 0;
}
"""


@functools.lru_cache(maxsize=None)
def select_kernel() -> Optional[Callable]:
    r"""The C selection kernel of :func:`twin_knn_graph`, built on first
    use, or :obj:`None` where it cannot be built."""
    return native_function('select_nearest', _SELECT_SOURCE, [
        ctypes.c_void_p] * 2 + [ctypes.c_int64] * 2 + [
        ctypes.c_int, ctypes.c_float] + [ctypes.c_int64] * 2 + [
        ctypes.c_void_p] * 2)


#: For the targets i in [begin, end), with group edges each from
#: sources[i * group ...]: best[i, o] = max over the edges of the product of
#: weight row o (packed bits, word-major: word w of row o at
#: weight[w * outputs + o]) and the signs of x_j - x_i >= upper, as
#: channels - 2 popcount(bits XOR weight). Subtraction and comparison are
#: those of torch (IEEE single, ordered >=).
_EDGE_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* Packs the signs of x_j - x_i >= upper (bit c of word c / 64). */
static void pack_edge(const float *xj, const float *xi, const float *upper,
                      int64_t channels, int vector, uint64_t *bits) {
    int64_t c = 0;
#if defined(__AVX512F__)
    if (vector) {
        for (; c + 16 <= channels; c += 16) {
            const __m512 diff = _mm512_sub_ps(_mm512_loadu_ps(xj + c),
                                              _mm512_loadu_ps(xi + c));
            const uint64_t mask = _mm512_cmp_ps_mask(
                diff, _mm512_loadu_ps(upper + c), _CMP_GE_OQ);
            if ((c & 63) == 0) bits[c >> 6] = 0;
            bits[c >> 6] |= mask << (c & 63);
        }
    }
#endif
    for (; c < channels; ++c) {
        if ((c & 63) == 0) bits[c >> 6] = 0;
        bits[c >> 6] |= (uint64_t)(xj[c] - xi[c] >= upper[c]) << (c & 63);
    }
}

int threshold_edge_max(const float *x_source, const float *x_target,
                       const int64_t *sources, int64_t channels,
                       int64_t group, const float *upper,
                       const uint64_t *weight, int64_t outputs, int vector,
                       int64_t begin, int64_t end, int32_t *best) {
    const int64_t words = (channels + 63) / 64;
    uint64_t *bits = malloc(words * sizeof(uint64_t));
    int32_t *ones = malloc(outputs * sizeof(int32_t));
    if (!bits || !ones) {
        free(bits); free(ones);
        return -1;
    }
    for (int64_t i = begin; i < end; ++i) {
        const float *xi = x_target + i * channels;
        int32_t *out = best + i * outputs;
        for (int64_t o = 0; o < outputs; ++o) out[o] = INT32_MAX;
        for (int64_t e = 0; e < group; ++e) {
            pack_edge(x_source + sources[i * group + e] * channels, xi, upper,
                      channels, vector, bits);
            for (int64_t o = 0; o < outputs; ++o) ones[o] = 0;
            for (int64_t w = 0; w < words; ++w) {
                const uint64_t b = bits[w], *row = weight + w * outputs;
                for (int64_t o = 0; o < outputs; ++o)
                    ones[o] += (int32_t)__builtin_popcountll(b ^ row[o]);
            }
            for (int64_t o = 0; o < outputs; ++o)
                out[o] = ones[o] < out[o] ? ones[o] : out[o];
        }
        for (int64_t o = 0; o < outputs; ++o)
            out[o] = (int32_t)channels - 2 * out[o];
    }
    free(bits);
    free(ones);
    return 0;
}
"""


@functools.lru_cache(maxsize=None)
def edge_kernel() -> Optional[Callable]:
    r"""The C kernel of :func:`threshold_products`, built on first use, or
    :obj:`None` where it cannot be built."""
    return native_function('threshold_edge_max', _EDGE_SOURCE, [
        ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2 + [
        ctypes.c_void_p] * 2 + [ctypes.c_int64, ctypes.c_int] + [
        ctypes.c_int64] * 2 + [ctypes.c_void_p])
