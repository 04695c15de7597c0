r"""Bit packing: 1-, 2-, 4- and 8-bit codes stored densely in :obj:`uint8`.

Codes are packed along the last dimension, :math:`8/b` codes per byte, the
first code in the lowest bits; the last byte of a row is zero-padded.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_qgnn.quantizers.functional import check_bits

PACKABLE_BITS = (1, 2, 4, 8)


def container_bits(bits: int) -> int:
    r"""The packable width that holds :obj:`bits`-bit codes (3 → 4, 5 → 8)."""
    check_bits(bits)
    for width in PACKABLE_BITS:
        if bits <= width:
            return width


def _check_bits(bits: int):
    if bits not in PACKABLE_BITS:
        raise ValueError(f"'bits' must be one of {PACKABLE_BITS} (got {bits}); "
                         f"use container_bits() for other widths")


def _shifts(bits: int, device) -> Tensor:
    return torch.arange(0, 8, bits, dtype=torch.uint8, device=device)


def pack_bits(codes: Tensor, bits: int) -> Tensor:
    r"""Packs unsigned integer :obj:`codes` in :math:`[0, 2^b)` into bytes.

    Args:
        codes (torch.Tensor): Integer tensor of shape :math:`(*, L)`.
        bits (int): Code width, one of 1, 2, 4, 8.

    Returns:
        :obj:`uint8` tensor of shape :math:`(*, \lceil L b / 8\rceil)`.
    """
    _check_bits(bits)
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(f"'codes' must be an integer tensor (got dtype "
                        f"{codes.dtype})")
    if codes.dim() == 0:
        raise ValueError("'codes' must have at least one dimension")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 1 << bits):
        raise ValueError(f"'codes' must lie in [0, {(1 << bits) - 1}] for "
                         f"{bits}-bit packing (got [{int(codes.min())}, "
                         f"{int(codes.max())}])")
    per_byte = 8 // bits
    length = codes.size(-1)
    codes = F.pad(codes.to(torch.uint8), (0, -length % per_byte))
    codes = codes.reshape(*codes.shape[:-1], codes.size(-1) // per_byte,
                          per_byte)
    packed = (codes << _shifts(bits, codes.device)).sum(-1, dtype=torch.uint8)
    return packed


def unpack_bits(packed: Tensor, bits: int, length: int) -> Tensor:
    r"""Inverse of :func:`pack_bits`: the first :obj:`length` codes of each
    row, as :obj:`uint8` of shape :math:`(*, L)`."""
    _check_bits(bits)
    if packed.dtype != torch.uint8:
        raise TypeError(f"'packed' must be a uint8 tensor (got dtype "
                        f"{packed.dtype})")
    per_byte = 8 // bits
    if length < 0 or length > packed.size(-1) * per_byte:
        raise ValueError(f"'length' must be in [0, {packed.size(-1) * per_byte}] "
                         f"for {packed.size(-1)} bytes of {bits}-bit codes "
                         f"(got {length})")
    mask = (1 << bits) - 1
    codes = (packed.unsqueeze(-1) >> _shifts(bits, packed.device)) & mask
    return codes.reshape(*packed.shape[:-1],
                         packed.size(-1) * per_byte)[..., :length]
