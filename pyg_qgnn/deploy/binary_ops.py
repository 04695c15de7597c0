r"""Binary arithmetic on packed bits, one bit per :math:`\pm 1` value.

Layout: that of :func:`~pyg_qgnn.quantizers.pack_bits` with 1-bit codes,
bit 1 for :math:`+1` and bit 0 for :math:`-1`, 8 values per byte along the
last dimension, the first value in the lowest bit; the unused high bits of
the last byte are zero. With it (`Bahri et al., 2021
<https://arxiv.org/abs/2012.15823>`_, Sec. 4.2):

* XOR is the product's negation, :math:`x \oplus y \leftrightarrow
  -x \odot y` (:func:`xor_edge_features`, the edge feature of
  :class:`XorEdgeConv`);
* a dot product of :math:`\pm 1` vectors of length :math:`d` is
  :math:`d - 2\,\mathrm{popcount}(x \oplus y)` (:func:`binary_matmul`).
"""
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_qgnn.deploy.backend import backend
from pyg_qgnn.quantizers.binary import check_signs, unpack_signs
from pyg_qgnn.quantizers.packing import pack_bits

MATMUL_IMPLS = ('auto', 'int8', 'popcount', 'torch')

#: Popcount of every byte value, for the pure-PyTorch path.
_BYTE_POPCOUNT = torch.tensor([bin(i).count('1') for i in range(256)],
                              dtype=torch.int32)

#: Words XOR-ed at once by the popcount matmul (bounds its scratch memory).
_CHUNK = 1 << 22

#: Rows per int8 GEMM call: a block's int32 output stays in cache (one
#: thread of an AVX-512 CPU: 1.7x faster at 16384 x 512 -> 1024, 3.7x at
#: 327680 x 128 -> 256, the same below 4096 rows).
_GEMM_ROWS = 4096


def check_packed(packed: Tensor, num_bits: Optional[int] = None,
                 name: str = 'packed') -> int:
    r"""Validates packed codes of :obj:`num_bits` values per row and
    returns :obj:`num_bits` (by default all bits of the bytes)."""
    if not isinstance(packed, Tensor) or packed.dtype != torch.uint8:
        raise TypeError(f"'{name}' must be a uint8 tensor of packed bits (got "
                        f"{getattr(packed, 'dtype', type(packed).__name__)})")
    if packed.dim() != 2 or packed.size(1) < 1:
        raise ValueError(f"'{name}' must have shape (rows, bytes) with at "
                         f"least one byte (got {tuple(packed.shape)})")
    width = packed.size(1)
    if num_bits is None:
        return 8 * width
    if isinstance(num_bits, bool) or not isinstance(num_bits, int) \
            or not 8 * (width - 1) < num_bits <= 8 * width:
        raise ValueError(f"'num_bits' must be an int in [{8 * width - 7}, "
                         f"{8 * width}] for {width} bytes per row "
                         f"(got {num_bits!r})")
    if num_bits % 8 and packed.numel() and \
            bool((packed[:, -1] >> (num_bits % 8)).any()):
        raise ValueError(f"'{name}' has nonzero padding bits beyond "
                         f"'num_bits'={num_bits}; pack it with pack_signs()")
    return num_bits


def pack_sign_bits(x: Tensor) -> Tensor:
    r"""Packs :math:`\mathrm{sign}(x)` (:math:`+1` for :math:`x \ge 0`, as
    :func:`~pyg_qgnn.quantizers.ste_sign`) of finite real :obj:`x`
    :math:`(*, d)` into :obj:`uint8` :math:`(*, \lceil d / 8 \rceil)`."""
    return pack_codes(sign_codes(x))


def sign_codes(x: Tensor, name: str = 'x', check: bool = True) -> Tensor:
    r""":obj:`int8` codes :math:`\mathrm{sign}(x) \in \{-1, +1\}`
    (:math:`+1` for :math:`x \ge 0`) of finite floating-point :obj:`x`;
    :obj:`check=False` skips the finiteness check for inputs checked
    upstream."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"'{name}' must be a floating-point tensor (got "
                        f"{getattr(x, 'dtype', type(x).__name__)})")
    if check:
        check_finite_features(x, name)
    return (x >= 0).to(torch.int8) * 2 - 1


def check_finite_features(x: Tensor, name: str = 'x') -> Tensor:
    # One pass and no mask (20x faster than isfinite().all() on large
    # features): NaN propagates into the extremes, an infinity is one.
    if x.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(x)))
                              .all()):
        raise ValueError(f"'{name}' contains NaN or Inf values; expected "
                         f"finite features")
    return x


def pack_codes(codes: Tensor) -> Tensor:
    r""":func:`~pyg_qgnn.quantizers.binary.pack_signs` without its check,
    for codes that are :math:`\pm 1` by construction."""
    return pack_bits((codes > 0).to(torch.uint8), 1)


def xor_edge_features(x_packed: Union[Tensor, Tuple[Tensor, Tensor]],
                      edge_index: Tensor) -> Tensor:
    r"""The packed edge features :math:`\mathbf{x}_j \oplus \mathbf{x}_i =
    -\mathbf{x}_i \odot \mathbf{x}_j` (Eq. 17), one row per edge of
    :obj:`edge_index` :math:`(2, E)` (:obj:`[j, i]`, PyG's source-to-target
    order); padding bits stay zero. :obj:`x_packed` may be a pair
    (source, target) for bipartite graphs."""
    source_packed, target_packed = (x_packed if isinstance(x_packed, tuple)
                                    else (x_packed, x_packed))
    for packed in (source_packed, target_packed):
        if not isinstance(packed, Tensor) or packed.dtype != torch.uint8:
            raise TypeError(f"'x_packed' must be a uint8 tensor of packed "
                            f"bits (got {getattr(packed, 'dtype', packed)})")
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 \
            or edge_index.size(0) != 2:
        raise ValueError(f"'edge_index' must have shape (2, num_edges) "
                         f"(got {tuple(getattr(edge_index, 'shape', ()))})")
    source, target = edge_index
    return source_packed.index_select(0, source) ^ \
        target_packed.index_select(0, target)


def popcount(packed: Tensor) -> Tensor:
    r"""Number of set bits of every row :math:`(*, W)`, as :obj:`int32`
    :math:`(*)`."""
    table = _BYTE_POPCOUNT.to(packed.device)
    return table[packed.long()].sum(-1, dtype=torch.int32)


def binary_matmul(a: Tensor, b: Tensor, num_bits: int,
                  impl: str = 'auto') -> Tensor:
    r"""The :math:`\pm 1` matrix product :math:`\mathbf{A}\mathbf{B}^{\top}`,
    exact in :obj:`int32`:

    .. math::
        (\mathbf{A}\mathbf{B}^{\top})_{mn} = d - 2\,\mathrm{popcount}
        (\mathbf{a}_m \oplus \mathbf{b}_n)

    Args:
        a (torch.Tensor): Rows :math:`(M, \cdot)`, either packed
            (:obj:`uint8` :math:`(M, \lceil d / 8 \rceil)`) or :obj:`int8`
            :math:`\pm 1` codes :math:`(M, d)` (:func:`sign_codes`).
        b (torch.Tensor): Rows :math:`(N, \cdot)`, e.g. binary weights,
            packed or as codes.
        num_bits (int): The length :math:`d` of the vectors.
        impl (str, optional): :obj:`"int8"` (:math:`\pm 1` :obj:`int8` GEMM
            with :obj:`int32` accumulation, :func:`torch._int_mm`),
            :obj:`"popcount"` (XOR and popcount of 64-bit words,
            :func:`numpy.bitwise_count`), :obj:`"torch"` (float matmul of
            the signs, the reference) or :obj:`"auto"` (the fastest present,
            see :func:`~pyg_qgnn.deploy.backend`). (default: :obj:`"auto"`)

    Returns:
        :obj:`int32` tensor :math:`(M, N)`.
    """
    if isinstance(num_bits, bool) or not isinstance(num_bits, int) \
            or num_bits < 1:
        raise ValueError(f"'num_bits' must be a positive int "
                         f"(got {num_bits!r})")
    for name, rows in (('a', a), ('b', b)):
        if isinstance(rows, Tensor) and rows.dtype == torch.int8:
            check_signs(rows, name)
            if rows.dim() != 2 or rows.size(1) != num_bits:
                raise ValueError(f"'{name}' must have shape (rows, "
                                 f"{num_bits}) (got {tuple(rows.shape)})")
        else:
            check_packed(rows, num_bits, name)
    if impl not in MATMUL_IMPLS:
        raise ValueError(f"'impl' must be one of {MATMUL_IMPLS} "
                         f"(got {impl!r})")
    found = backend()
    if impl == 'int8' and not found.int8_gemm:
        raise RuntimeError("torch._int_mm is not available on this machine; "
                           "use impl='auto'")
    if impl == 'popcount' and not found.numpy_popcount:
        raise RuntimeError("numpy.bitwise_count (numpy >= 2) is not "
                           "available; use impl='auto'")
    return matmul_codes(a, b, num_bits, impl)


def matmul_codes(a: Tensor, b: Tensor, num_bits: int,
                 impl: str = 'auto') -> Tensor:
    r""":func:`binary_matmul` without the checks, for deployed layers whose
    codes are valid by construction."""
    if impl == 'auto':
        impl = backend().binary_matmul
        if a.device.type != 'cpu':
            impl = 'torch'
    if impl == 'popcount':
        return _popcount_matmul(_packed(a), _packed(b), num_bits)
    a, b = _codes(a, num_bits), _codes(b, num_bits)
    if impl == 'int8':
        # Zero columns add nothing; torch 2.13's CPU _int_mm returns garbage
        # for an inner size of 1, so pad it to whole bytes.
        pad = -num_bits % 8
        if pad:
            a, b = F.pad(a, (0, pad)), F.pad(b, (0, pad))
        return _int8_matmul(a, b.t())
    # Exact: sums of at most 2^24 terms of ±1 are integers in float32.
    return (a.float() @ b.float().t()).to(torch.int32)


def _int8_matmul(a: Tensor, b: Tensor) -> Tensor:
    r""":func:`torch._int_mm` of :obj:`a` :math:`(M, K)` and :obj:`b`
    :math:`(K, N)` in blocks of :obj:`_GEMM_ROWS` rows (exact either way)."""
    if a.size(0) <= _GEMM_ROWS:
        return torch._int_mm(a, b)
    out = torch.empty(a.size(0), b.size(1), dtype=torch.int32,
                      device=a.device)
    for row in range(0, a.size(0), _GEMM_ROWS):
        torch._int_mm(a[row:row + _GEMM_ROWS], b,
                      out=out[row:row + _GEMM_ROWS])
    return out


def _packed(rows: Tensor) -> Tensor:
    return rows if rows.dtype == torch.uint8 else pack_codes(rows)


def _codes(rows: Tensor, num_bits: int) -> Tensor:
    return unpack_signs(rows, num_bits) if rows.dtype == torch.uint8 else rows


def _popcount_matmul(a_packed: Tensor, b_packed: Tensor,
                     num_bits: int) -> Tensor:
    import numpy as np

    # Zero bytes pad rows to whole 64-bit words; zeros XOR to zero.
    pad = -a_packed.size(1) % 8
    a = F.pad(a_packed, (0, pad)).cpu().contiguous().numpy().view(np.uint64)
    b = F.pad(b_packed, (0, pad)).cpu().contiguous().numpy().view(np.uint64)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)
    step = max(1, _CHUNK // max(1, b.shape[0] * b.shape[1]))
    for row in range(0, a.shape[0], step):
        xor = a[row:row + step, None, :] ^ b[None, :, :]
        ones = np.bitwise_count(xor).sum(-1, dtype=np.int32)
        out[row:row + step] = num_bits - 2 * ones
    return torch.from_numpy(out).to(a_packed.device)


# Signs of monotone maps as thresholds ########################################

#: Probes that confirm a found threshold: both infinities, the extremes,
#: both zeros, the smallest subnormals and a few ordinary values.
_PROBES = (-float('inf'), -1.0, -1e-30, -0.0, 0.0, 1e-30, 1.0, float('inf'))


def sign_thresholds(transform: Callable[[Tensor], Tensor], channels: int,
                    dtype: torch.dtype = torch.float32,
                    device: Optional[torch.device] = None
                    ) -> Optional[Tuple[Tensor, Tensor]]:
    r"""Per channel :math:`c`, a threshold :math:`u_c` and a sign
    :math:`f_c \in \{-1, +1\}` with

    .. math::
        \mathrm{sign}\big(t(\mathbf{v})\big)_c = f_c \cdot
        \mathrm{sign}(v_c - u_c) \qquad (+1 \text{ for } v_c \ge u_c)

    for every value :math:`v_c` of :obj:`dtype`, infinities included, where
    :math:`t` (:obj:`transform`) is channel-wise and monotone in each
    channel, as batch normalization in evaluation is: the rounded
    :math:`v \gamma' + \beta'` never decreases (:math:`\gamma' > 0`) or
    never increases (:math:`\gamma' < 0`) as :math:`v` grows. The threshold
    is found by bisection over the ordered values of :obj:`dtype`, running
    :obj:`transform` itself, so it reproduces the rounding of
    :math:`t` exactly; :func:`threshold_codes` then gives the codes that
    :obj:`sign_codes(transform(v))` gives, without computing :math:`t`.

    Returns :obj:`None` if a probe contradicts monotonicity (e.g.
    :math:`\gamma' = 0` makes :math:`t(\pm\infty)` NaN, hence :math:`-1`,
    and every finite value :math:`+1`).

    Args:
        transform (callable): Maps :math:`(P, C)` to :math:`(P, C)`,
            channel by channel.
        channels (int): :math:`C`.
        dtype (torch.dtype, optional): The floating-point type of the values.
            (default: :obj:`torch.float32`)
        device (torch.device, optional): Where to run :obj:`transform`.

    Returns:
        :obj:`(thresholds, flips)`: :obj:`dtype` :math:`(C)` and :obj:`int8`
        :math:`(C)`, or :obj:`None`.
    """
    bits = torch.finfo(dtype).bits
    ints = {16: torch.int16, 32: torch.int32, 64: torch.int64}[bits]

    def values(keys: Tensor) -> Tensor:  # keys in the order of the values
        patterns = torch.where(keys >= 0, keys,
                               (-1 - keys) + torch.iinfo(ints).min)
        return patterns.to(ints).view(dtype)

    def positive(v: Tensor) -> Tensor:  # sign(t(v)) == +1, as sign_codes
        return transform(v.reshape(-1, channels)).reshape(v.shape) >= 0

    infinities = torch.tensor([-float('inf'), float('inf')], dtype=dtype,
                              device=device)
    negative, high = infinities.view(ints).tolist()
    low = -1 - (negative & torch.iinfo(ints).max)  # the key of -inf
    lo = torch.full((channels, ), low, dtype=torch.long, device=device)
    hi = torch.full_like(lo, high)
    at_lo, at_hi = positive(values(torch.stack([lo, hi])))
    for _ in range(bits):  # keeps positive(lo) == at_lo, positive(hi) == at_hi
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)
        like_lo = positive(values(mid)) == at_lo
        lo, hi = torch.where(like_lo, mid, lo), torch.where(like_lo, hi, mid)
    # hi is the first value on the side of +inf; without a change of sign
    # every value is on it (threshold -inf).
    thresholds = torch.where(at_lo != at_hi, values(hi), infinities[0])
    flips = torch.where(at_hi, 1, -1).to(torch.int8)
    neighbours = torch.stack([hi - 1, hi, hi + 1]).clamp_(low, high)
    probes = torch.cat([torch.tensor(_PROBES, dtype=dtype, device=device)
                        .unsqueeze(1).expand(-1, channels),
                        values(neighbours)])
    if not torch.equal(positive(probes),
                       threshold_codes(probes, thresholds, flips) > 0):
        return None
    return thresholds, flips


def threshold_codes(x: Tensor, thresholds: Tensor,
                    flips: Optional[Tensor] = None) -> Tensor:
    r""":obj:`int8` codes :math:`f_c \cdot \mathrm{sign}(x_c - u_c)`
    (:math:`+1` for :math:`x_c \ge u_c`) of :obj:`x` :math:`(*, C)`, see
    :func:`sign_thresholds`; without :obj:`flips`, :math:`f = 1`."""
    codes = (x >= thresholds).to(torch.int8).mul_(2).sub_(1)
    return codes if flips is None else codes.mul_(flips)
