"""Tests of bit packing (pyg_qgnn.quantizers.packing)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_qgnn.quantizers import container_bits, pack_bits, unpack_bits

PACKABLE = [1, 2, 4, 8]


# --------------------------------------------------------------------------
# container_bits
# --------------------------------------------------------------------------
@pytest.mark.parametrize('bits,width', [(1, 1), (2, 2), (3, 4), (4, 4),
                                        (5, 8), (6, 8), (7, 8), (8, 8)])
def test_container_bits_rounds_up_to_packable_width(bits, width):
    assert container_bits(bits) == width


@pytest.mark.parametrize('bits', [9, 16])
def test_container_bits_rejects_too_wide(bits):
    with pytest.raises(ValueError, match='bits'):
        container_bits(bits)


# --------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------
def _ref_pack_row(codes, bits):
    """Byte-by-byte reference: first code in the lowest bits."""
    per_byte = 8 // bits
    out = []
    for start in range(0, len(codes), per_byte):
        byte = 0
        for k, c in enumerate(codes[start:start + per_byte]):
            byte |= c << (k * bits)
        out.append(byte)
    return out


@pytest.mark.parametrize('bits,codes,expected', [
    (1, [1, 0, 1, 1, 0, 0, 0, 1, 1], [0b10001101, 0b00000001]),
    (2, [3, 0, 2, 1, 1], [0b01100011, 0b00000001]),
    (4, [0xA, 0x5, 0xF], [0x5A, 0x0F]),
    (8, [0, 255, 17], [0, 255, 17]),
])
def test_pack_bits_layout_first_code_in_lowest_bits(bits, codes, expected):
    packed = pack_bits(torch.tensor(codes, dtype=torch.uint8), bits)
    assert packed.dtype == torch.uint8
    assert packed.tolist() == expected


# --------------------------------------------------------------------------
# Round trip (hypothesis)
# --------------------------------------------------------------------------
@st.composite
def codes_and_bits(draw):
    bits = draw(st.sampled_from(PACKABLE))
    lead = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    length = draw(st.integers(0, 37))
    n = math.prod(lead) * length
    values = draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=n,
                           max_size=n))
    dtype = draw(st.sampled_from([torch.uint8, torch.int8, torch.int32,
                                  torch.int64]))
    if dtype == torch.int8 and bits == 8:
        dtype = torch.int16
    codes = torch.tensor(values, dtype=dtype).reshape(*lead, length)
    return codes, bits


@settings(deadline=None, max_examples=60)
@given(codes_and_bits())
def test_pack_unpack_round_trip_is_exact(data):
    codes, bits = data
    length = codes.size(-1)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (*codes.shape[:-1], math.ceil(length * bits / 8))
    out = unpack_bits(packed, bits, length)
    assert out.dtype == torch.uint8
    assert out.shape == codes.shape
    assert torch.equal(out.to(torch.int64), codes.to(torch.int64))


@settings(deadline=None, max_examples=30)
@given(codes_and_bits())
def test_pack_bits_matches_bytewise_reference(data):
    codes, bits = data
    packed = pack_bits(codes, bits)
    n_rows = math.prod(codes.shape[:-1])
    rows = codes.reshape(n_rows, codes.size(-1)).tolist()
    ref = [_ref_pack_row(row, bits) for row in rows]
    assert packed.reshape(n_rows, packed.size(-1)).tolist() == ref


@pytest.mark.parametrize('bits', PACKABLE)
@pytest.mark.parametrize('length', [1, 3, 7, 8, 9, 15, 16, 17])
def test_packed_size_is_ceil_length_times_bits_over_eight(bits, length):
    codes = torch.zeros(2, length, dtype=torch.uint8)
    assert pack_bits(codes, bits).shape == (2, math.ceil(length * bits / 8))


# --------------------------------------------------------------------------
# Empty inputs
# --------------------------------------------------------------------------
@pytest.mark.parametrize('bits', PACKABLE)
@pytest.mark.parametrize('shape', [(0, ), (3, 0), (2, 4, 0)])
def test_empty_rows_round_trip(bits, shape):
    codes = torch.zeros(shape, dtype=torch.uint8)
    packed = pack_bits(codes, bits)
    assert packed.shape == shape
    assert unpack_bits(packed, bits, 0).shape == shape


@pytest.mark.parametrize('bits', PACKABLE)
@pytest.mark.parametrize('shape', [(0, 5), (2, 0, 3)])
def test_pack_bits_empty_leading_dimension(bits, shape):
    # No rows at all (say a graph with zero nodes), but a nonzero row length.
    codes = torch.zeros(shape, dtype=torch.uint8)
    packed = pack_bits(codes, bits)
    assert packed.shape == (*shape[:-1], math.ceil(shape[-1] * bits / 8))


@pytest.mark.parametrize('bits', PACKABLE)
@pytest.mark.parametrize('shape', [(0, 5), (2, 0, 3)])
def test_unpack_bits_empty_leading_dimension(bits, shape):
    packed = torch.zeros(*shape[:-1], math.ceil(shape[-1] * bits / 8),
                         dtype=torch.uint8)
    assert unpack_bits(packed, bits, shape[-1]).shape == shape


# --------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------
@pytest.mark.parametrize('bits', [0, 3, 5, 16])
def test_pack_bits_rejects_unpackable_width(bits):
    with pytest.raises(ValueError, match='bits'):
        pack_bits(torch.zeros(4, dtype=torch.uint8), bits)


@pytest.mark.parametrize('bits', [0, 3, 5, 16])
def test_unpack_bits_rejects_unpackable_width(bits):
    with pytest.raises(ValueError, match='bits'):
        unpack_bits(torch.zeros(4, dtype=torch.uint8), bits, 4)


@pytest.mark.parametrize('bits,bad', [(1, 2), (2, 4), (4, 16), (8, 256),
                                      (4, -1), (8, -1)])
def test_pack_bits_rejects_out_of_range_codes(bits, bad):
    codes = torch.tensor([0, 1, bad, 0], dtype=torch.int64)
    with pytest.raises(ValueError, match='codes'):
        pack_bits(codes, bits)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bool])
def test_pack_bits_rejects_non_integer_codes(dtype):
    with pytest.raises(TypeError, match='codes'):
        pack_bits(torch.zeros(4, dtype=dtype), 4)


def test_pack_bits_rejects_scalar_codes():
    with pytest.raises(ValueError, match='codes'):
        pack_bits(torch.tensor(1, dtype=torch.uint8), 4)


@pytest.mark.parametrize('dtype', [torch.int8, torch.int64, torch.float32])
def test_unpack_bits_rejects_non_uint8(dtype):
    with pytest.raises(TypeError, match='packed'):
        unpack_bits(torch.zeros(4, dtype=dtype), 4, 4)


@pytest.mark.parametrize('length', [-1, 9])
def test_unpack_bits_rejects_length_beyond_packed(length):
    packed = torch.zeros(2, dtype=torch.uint8)  # 2 bytes = 4 codes of 4 bits
    with pytest.raises(ValueError, match='length'):
        unpack_bits(packed, 4, length if length < 0 else 5)
