r"""k nearest neighbours within point clouds: Hamming distance on packed
binary codes (:func:`hamming_knn`) and the float baseline of the same
interface (:func:`knn`), as the dynamic graph of DGCNN needs them.

Both return a graph in the layout of
:func:`torch_geometric.nn.knn_graph` (:obj:`flow="source_to_target"`):
:obj:`edge_index[0]` holds the neighbours :math:`j`, :obj:`edge_index[1]`
the centres :math:`i`, grouped by centre in increasing order, and the
neighbours of a centre ordered by (distance, index). The search is exact,
with ties broken by the lower index.

Conventions, as :func:`~torch_geometric.nn.knn_graph`:

* :obj:`batch` (sorted) assigns each point to a cloud; neighbours are only
  searched within the point's cloud.
* :obj:`loop=False` (the default) leaves the point itself out: every point
  gets the :math:`\min(k, n_c - 1)` nearest other points of its cloud of
  :math:`n_c` points, so a cloud with fewer than :math:`k + 1` points is
  fully connected. (PyG searches :math:`k + 1` points and drops the centre,
  which returns :math:`k + 1` neighbours when duplicates of lower index push
  the centre out; here it is always :math:`\min(k, n_c - 1)`.)
* :obj:`loop=True` ranks the point itself like any other point (at distance
  zero), as :obj:`torch_cluster.knn(x, x, k)` inside
  :class:`~torch_geometric.nn.conv.DynamicEdgeConv` does: every point gets
  :math:`\min(k, n_c)` neighbours, usually itself first.

Paths of :func:`hamming_knn`, all exact and tested against each other
(16 clouds of 1024 points, :math:`k = 20`, one thread of a shared AVX-512
core; float :obj:`cdist` + :obj:`topk` 220–330 ms): faiss'
:class:`~faiss.IndexBinaryFlat` heap search ~3x faster than the float
graph, its counting search 5–6x (distances lie in :math:`[0, d]`, so a
count beats a heap, but its per-pair bookkeeping dominates), and the C
kernel here 13–16x: vectorized popcounts into 16-bit distances, the
:math:`k`-th distance by bisection over vectorized counts, then one pass
that collects the nearer points and the lowest-index ties.
"""
import ctypes
import functools
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_qgnn.deploy.backend import backend, native_function, parallel_map
from pyg_qgnn.deploy.binary_ops import check_packed, pack_codes
from pyg_qgnn.quantizers.binary import check_signs, unpack_signs
from pyg_qgnn.quantizers.functional import check_floating

KNN_IMPLS = ('auto', 'native', 'faiss', 'torch')
METRICS = ('l2', 'xor')

#: Distance matrix entries computed at once by the pure-PyTorch paths.
_CHUNK = 1 << 22

# (start, end, row_start, row_end) -> int64 keys (rows, end - start) that
# order the candidates of each row like their distances.
DistanceKeys = Callable[[int, int, int, int], Tensor]


def hamming_knn(codes_packed: Tensor, k: int, batch: Optional[Tensor] = None,
                num_bits: Optional[int] = None, loop: bool = False,
                impl: str = 'auto') -> Tensor:
    r"""The :math:`k`-nearest-neighbour graph of binary codes in Hamming
    space (`Bahri et al., 2021 <https://arxiv.org/abs/2012.15823>`_,
    Sec. 4.2):

    .. math::
        d_H(\mathbf{x}_i, \mathbf{x}_j) = \mathrm{popcount}(\mathbf{x}_i
        \oplus \mathbf{x}_j) = \tfrac{1}{2} \sum_{c=1}^{d}
        (1 - x_{i,c}\, x_{j,c})

    Args:
        codes_packed (torch.Tensor): :obj:`uint8` codes :math:`(N, \lceil d
            / 8 \rceil)` from :func:`~pyg_qgnn.quantizers.binary.pack_signs`
            (bit 1 for :math:`+1`, first value in the lowest bit, padding
            bits zero).
        k (int): Number of neighbours, at least 1.
        batch (torch.Tensor, optional): Sorted cloud index :math:`(N)` of
            every point. (default: :obj:`None`, one cloud)
        num_bits (int, optional): Code length :math:`d`; the last byte's
            unused high bits are padding. (default: :obj:`None`, all bits of
            the bytes)
        loop (bool, optional): Count each point among its own candidates
            (see the module notes). (default: :obj:`False`)
        impl (str, optional): :obj:`"native"` (a C kernel built on first
            use: vectorized popcounts, then a counting selection),
            :obj:`"faiss"` (the counting search of
            :class:`faiss.IndexBinaryFlat` with :obj:`use_heap=False`),
            :obj:`"torch"` (the pure-PyTorch reference) or :obj:`"auto"`,
            the fastest one present (see :func:`~pyg_qgnn.deploy.backend`).
            (default: :obj:`"auto"`)

    Returns:
        :obj:`edge_index` :math:`(2, E)` of :obj:`int64`, neighbours first.
    """
    k = _check_k(k)
    num_bits = check_packed(codes_packed, num_bits, 'codes_packed')
    if impl not in KNN_IMPLS:
        raise ValueError(f"'impl' must be one of {KNN_IMPLS} (got {impl!r})")
    ptr = _cloud_ptr(batch, codes_packed.size(0))
    if impl == 'auto':
        impl = backend().hamming_knn
        if codes_packed.device.type != 'cpu':
            impl = 'torch'
        elif impl == 'native' and num_bits > NATIVE_MAX_BITS:
            impl = 'faiss' if backend().faiss else 'torch'
    if impl == 'native':
        return _native_knn(codes_packed, k, ptr, loop)
    if impl == 'faiss':
        return _faiss_knn(codes_packed, k, ptr, loop)

    signs = unpack_signs(codes_packed, num_bits).float()

    def keys(start, end, row_start, row_end):
        # Exact: the dot products of ±1 vectors are small integers.
        dot = signs[row_start:row_end] @ signs[start:end].t()
        return ((num_bits - dot) / 2).round_().long()

    return _knn(ptr, k, loop, keys, codes_packed.device)


def knn(x: Tensor, k: int, batch: Optional[Tensor] = None,
        loop: bool = False, metric: str = 'l2') -> Tensor:
    r"""The float :math:`k`-nearest-neighbour graph, with the interface and
    conventions of :func:`hamming_knn`.

    .. math::
        \text{l2:}\ \|\mathbf{x}_i - \mathbf{x}_j\|_2, \qquad
        \text{xor:}\ \tfrac{1}{2}\big(d - \mathbf{x}_i^{\top}
        \mathbf{x}_j\big)

    The :obj:`"xor"` metric is the float relaxation of Eq. 21 of `Bahri et
    al., 2021 <https://arxiv.org/abs/2012.15823>`_, named as in
    :func:`~pyg_qgnn.nn.conv.knn_graph.knn_graph`: on :math:`\pm 1` features
    it is the Hamming distance (same graph as :func:`hamming_knn` of their
    packed codes, the name this library keeps for packed codes), on real
    features the relaxation used in training.

    Args:
        x (torch.Tensor): Features :math:`(N, d)`, finite.
        k (int): Number of neighbours, at least 1.
        batch (torch.Tensor, optional): Sorted cloud index :math:`(N)`.
            (default: :obj:`None`)
        loop (bool, optional): Count each point among its own candidates.
            (default: :obj:`False`)
        metric (str, optional): :obj:`"l2"` or :obj:`"xor"`.
            (default: :obj:`"l2"`)

    Returns:
        :obj:`edge_index` :math:`(2, E)` of :obj:`int64`, neighbours first.
    """
    k = _check_k(k)
    check_floating(x, 'x')
    if x.dim() != 2:
        raise ValueError(f"'x' must have shape (num_points, features) "
                         f"(got {tuple(x.shape)})")
    if metric not in METRICS:
        raise ValueError(f"'metric' must be one of {METRICS} "
                         f"(got {metric!r})")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("'x' contains NaN or Inf values; expected finite "
                         "features")
    ptr = _cloud_ptr(batch, x.size(0))
    x = x.detach()

    def keys(start, end, row_start, row_end):
        rows, cloud = x[row_start:row_end], x[start:end]
        if metric == 'l2':
            dist = torch.cdist(rows, cloud)
        else:
            dist = (x.size(1) - rows @ cloud.t()) / 2
        return _float_keys(dist)

    return _knn(ptr, k, loop, keys, x.device)


def hamming_knn_graph(x: Tensor, k: int, batch: Optional[Tensor] = None,
                      loop: bool = True) -> Tensor:
    r""":func:`hamming_knn` of :math:`\pm 1` features :obj:`x` :math:`(N, d)`
    of any real dtype, packed first: the dynamic graph of the binary
    DGCNN layers in evaluation, which by default count each point among its
    own neighbours (:obj:`loop=True`), as
    :class:`~torch_geometric.nn.conv.DynamicEdgeConv` does."""
    check_signs(x, 'x')
    if x.dim() != 2:
        raise ValueError(f"'x' must have shape (num_points, features) "
                         f"(got {tuple(x.shape)})")
    return hamming_knn(pack_codes(x), k, batch, num_bits=x.size(1),
                       loop=loop)


# Shared by both ##############################################################


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"'k' must be an int >= 1 (got {k!r})")
    if k < 1:
        raise ValueError(f"'k' must be >= 1 (got {k})")
    return k


def _cloud_ptr(batch: Optional[Tensor], num_points: int) -> List[int]:
    r"""Boundaries :obj:`[0, n_0, n_0 + n_1, ..., N]` of the clouds."""
    if batch is None:
        return [0, num_points]
    if not isinstance(batch, Tensor) or batch.is_floating_point() \
            or batch.is_complex() or batch.dtype == torch.bool:
        raise TypeError(f"'batch' must be an integer tensor (got "
                        f"{getattr(batch, 'dtype', type(batch).__name__)})")
    if batch.dim() != 1 or batch.numel() != num_points:
        raise ValueError(f"'batch' must have shape ({num_points},), one cloud "
                         f"index per point (got {tuple(batch.shape)})")
    if num_points and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("'batch' must be sorted in non-decreasing order, one "
                         "run of points per cloud (as PyG's DataLoader builds "
                         "it)")
    counts = torch.unique_consecutive(batch, return_counts=True)[1]
    return [0] + counts.cumsum(0).tolist()


def _float_keys(dist: Tensor) -> Tensor:
    r"""Non-negative :obj:`int64` keys ordered like the float32 values."""
    # + 0.0 turns -0.0 into +0.0; negative floats order reversed as bits.
    bits = (dist.float() + 0.0).view(torch.int32).long()
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits + (1 << 31)


def _neighbours(n: int, k: int, loop: bool) -> int:
    return min(k, n if loop else n - 1)


def _knn(ptr: List[int], k: int, loop: bool, distance_keys: DistanceKeys,
         device: torch.device) -> Tensor:
    r"""Exact selection by :obj:`(distance key, index)` with a unique
    :obj:`int64` key per candidate, cloud by cloud and in row chunks."""
    sources, targets = [], []
    for start, end in zip(ptr[:-1], ptr[1:]):
        n = end - start
        kk = _neighbours(n, k, loop)
        if kk < 1:
            continue
        index_bits = (n - 1).bit_length()
        columns = torch.arange(n, device=device)
        step = max(1, _CHUNK // n)
        for row in range(0, n, step):
            rows = min(step, n - row)
            key = distance_keys(start, end, start + row, start + row + rows)
            key = (key << index_bits) | columns
            if not loop:
                diagonal = torch.arange(rows, device=device)
                key[diagonal, diagonal + row] = torch.iinfo(torch.int64).max
            nearest = key.topk(kk, dim=1, largest=False).indices
            sources.append(nearest.reshape(-1) + start)
            targets.append(torch.arange(start + row, start + row + rows,
                                        device=device).repeat_interleave(kk))
    return _edge_index(sources, targets, device)


def _edge_index(sources: List[Tensor], targets: List[Tensor],
                device: torch.device) -> Tensor:
    if not sources:
        return torch.empty(2, 0, dtype=torch.long, device=device)
    return torch.stack([torch.cat(sources), torch.cat(targets)])


#: The native kernel: one cloud, its codes word-major (word w of point j at
#: words[w * n + j]) so that the distance loop runs over contiguous words and
#: vectorizes. For the points i in [begin, end) it writes k edges each,
#: (offset + neighbour, offset + i), to sources and targets from their start.
_NATIVE_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int hamming_knn(const uint64_t *words, int64_t n, int64_t num_words,
                int64_t k, int loop, int64_t begin, int64_t end,
                int64_t offset, int64_t *sources, int64_t *targets) {
    const int64_t padded = (n + 7) / 8 * 8;
    const uint16_t far = (uint16_t)(64 * num_words + 1);  /* beyond all */
    uint16_t *dist = malloc(padded * sizeof(uint16_t));
    uint8_t *near = malloc(padded);
    uint64_t *picked = malloc(k * sizeof(uint64_t));
    if (!dist || !near || !picked) {
        free(dist); free(near); free(picked);
        return -1;
    }
    for (int64_t j = n; j < padded; ++j) dist[j] = far;
    for (int64_t i = begin; i < end; ++i) {
        for (int64_t j = 0; j < n; ++j) dist[j] = 0;
        for (int64_t w = 0; w < num_words; ++w) {
            const uint64_t q = words[w * n + i], *row = words + w * n;
            for (int64_t j = 0; j < n; ++j)
                dist[j] += (uint16_t)__builtin_popcountll(q ^ row[j]);
        }
        if (!loop) dist[i] = far;
        /* Distances lie in [0, 64 W]: the k-th smallest, lo, by bisection
           over counts (16-bit counters over chunks: the loop vectorizes). */
        uint16_t lo = 0, hi = far;
        while (lo < hi) {
            const uint16_t mid = (uint16_t)((lo + hi) / 2);
            int64_t count = 0;
            for (int64_t start = 0; start < n; start += 32768) {
                const int64_t stop = start + 32768 < n ? start + 32768 : n;
                uint16_t part = 0;
                for (int64_t j = start; j < stop; ++j) part += dist[j] <= mid;
                count += part;
            }
            if (count >= k) hi = mid; else lo = (uint16_t)(mid + 1);
        }
        /* Every point nearer than lo, then the lowest-index ones at lo:
           flag the candidates, then visit the flagged bytes 8 at a time. */
        int64_t ties = k, m = 0;
        for (int64_t j = 0; j < n; ++j) ties -= dist[j] < lo;
        for (int64_t j = 0; j < padded; ++j) near[j] = dist[j] <= lo;
        for (int64_t block = 0; block < padded; block += 8) {
            uint64_t flags;
            memcpy(&flags, near + block, 8);
            while (flags) {
                const int64_t j = block + (__builtin_ctzll(flags) >> 3);
                flags &= flags - 1;
                if (dist[j] < lo || ties-- > 0)
                    picked[m++] = ((uint64_t)dist[j] << 32) | (uint64_t)j;
            }
        }
        /* Order by (distance, index): insertion sort of the k keys. */
        for (int64_t a = 1; a < k; ++a) {
            const uint64_t key = picked[a];
            int64_t b = a;
            for (; b > 0 && picked[b - 1] > key; --b)
                picked[b] = picked[b - 1];
            picked[b] = key;
        }
        for (int64_t a = 0; a < k; ++a) {
            sources[(i - begin) * k + a] =
                offset + (int64_t)(picked[a] & 0xffffffffu);
            targets[(i - begin) * k + a] = offset + i;
        }
    }
    free(dist);
    free(near);
    free(picked);
    return 0;
}
"""


@functools.lru_cache(maxsize=None)
def native_kernel() -> Optional[Callable]:
    r"""The C Hamming kNN kernel, built on first use, or :obj:`None` where
    it cannot be built."""
    return native_function('hamming_knn', _NATIVE_SOURCE, [
        ctypes.c_void_p] + [ctypes.c_int64] * 3 + [ctypes.c_int] + [
        ctypes.c_int64] * 3 + [ctypes.c_void_p] * 2)


#: Widest codes of the native kernel (16-bit distances).
NATIVE_MAX_BITS = 64 * 1023


def _native_knn(codes: Tensor, k: int, ptr: List[int], loop: bool) -> Tensor:
    kernel = native_kernel()
    if kernel is None:
        raise RuntimeError("impl='native' needs a C compiler (cc or $CC); "
                           "use impl='auto'")
    if 8 * codes.size(1) > NATIVE_MAX_BITS:
        raise ValueError(f"impl='native' takes codes of at most "
                         f"{NATIVE_MAX_BITS} bits (got {8 * codes.size(1)})")
    device = codes.device
    codes = codes.detach().cpu()
    if codes.size(1) % 8:  # zero bytes to whole 64-bit words; they XOR to 0
        codes = F.pad(codes, (0, -codes.size(1) % 8))
    words = codes.contiguous().view(torch.int64)
    clouds = _clouds(ptr, k, loop)
    edge_index = torch.empty(2, sum(n * kk for _, n, kk in clouds),
                             dtype=torch.long)
    threads = torch.get_num_threads()
    # A task per cloud, or per share of a cloud's rows if clouds are fewer
    # than threads; the kernel releases the GIL, so tasks run in parallel.
    tasks, first = [], 0
    for start, n, kk in clouds:
        cloud = words[start:start + n].t().contiguous()
        step = -(-n // threads) if len(clouds) < threads else n
        for row in range(0, n, step):
            tasks.append((cloud, n, kk, row, min(n, row + step), start,
                          first + row * kk))
        first += n * kk
    edge = edge_index.element_size()

    def run(task):
        cloud, n, kk, begin, end, start, at = task
        status = kernel(cloud.data_ptr(), n, cloud.size(0), kk, int(loop),
                        begin, end, start,
                        edge_index[0].data_ptr() + at * edge,
                        edge_index[1].data_ptr() + at * edge)
        if status != 0:
            raise MemoryError('the native Hamming kNN kernel is out of memory')

    parallel_map(run, tasks, threads)
    return edge_index.to(device)


def _clouds(ptr: List[int], k: int, loop: bool) -> List[tuple]:
    r"""(start, size, neighbours) of every cloud with at least one edge."""
    clouds = [(start, end - start, _neighbours(end - start, k, loop))
              for start, end in zip(ptr[:-1], ptr[1:])]
    return [cloud for cloud in clouds if cloud[2] >= 1]


def _faiss_knn(codes: Tensor, k: int, ptr: List[int], loop: bool) -> Tensor:
    import faiss

    array = codes.detach().cpu().contiguous().numpy()
    clouds = _clouds(ptr, k, loop)
    threads = torch.get_num_threads()
    # Several clouds: one per thread, each search single-threaded, which
    # avoids an OpenMP fork and join per small cloud.
    per_search = 1 if len(clouds) >= 2 and threads >= 2 else threads

    def search(cloud):
        start, n, kk = cloud
        faiss.omp_set_num_threads(per_search)  # this thread's setting
        # Counting selection (distances lie in [0, d]) keeps candidates in
        # index order within a distance: exact, ties to the lower index.
        index = faiss.IndexBinaryFlat(8 * array.shape[1])
        index.use_heap = False
        index.add(array[start:start + n])
        _, labels = index.search(array[start:start + n],
                                 kk if loop else kk + 1)
        labels = torch.from_numpy(labels)
        return _drop_centre(labels) if not loop else labels

    previous = faiss.omp_get_max_threads()
    try:
        found = parallel_map(search, clouds, threads if per_search == 1 else 1)
    finally:
        faiss.omp_set_num_threads(previous)
    sources = [labels.reshape(-1) + start
               for labels, (start, _, _) in zip(found, clouds)]
    targets = [torch.arange(start, start + n).repeat_interleave(kk)
               for start, n, kk in clouds]
    return _edge_index(sources, targets, torch.device('cpu')).to(codes.device)


def _drop_centre(labels: Tensor) -> Tensor:
    r"""From :math:`k + 1` neighbours per row, the :math:`k` that are not the
    centre: the centre itself or, where ties pushed it out, the last one."""
    centre = labels == torch.arange(labels.size(0)).unsqueeze(1)
    centre[:, -1] |= ~centre.any(dim=1)
    return labels[~centre].view(labels.size(0), labels.size(1) - 1)
