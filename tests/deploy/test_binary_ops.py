"""Tests of the packed binary kernels (pyg_qgnn.deploy.binary_ops) and of the
backend probe."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_qgnn.deploy import (
    Backend,
    backend,
    binary_matmul,
    pack_sign_bits,
    popcount,
    sign_codes,
    xor_edge_features,
)
from pyg_qgnn.deploy import binary_ops
from pyg_qgnn.quantizers import pack_bits
from pyg_qgnn.quantizers.binary import pack_signs, unpack_signs

IMPLS = ['torch', 'int8', 'popcount']


def signs(rows, bits, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (rows, bits), generator=gen) * 2.0 - 1


# Packing #####################################################################


def test_pack_sign_bits_is_sign_then_pack_bits():
    x = torch.tensor([[0.5, -2.0, 0.0, -0.0, 3.0, -1e-9, 7.0, -7.0, 1.0]])
    # sign(0) = +1, as ste_sign; the first value in the lowest bit.
    expected = pack_bits(torch.tensor([[1, 0, 1, 1, 1, 0, 1, 0, 1]]), 1)
    assert torch.equal(pack_sign_bits(x), expected)
    assert torch.equal(pack_sign_bits(x), pack_signs(sign_codes(x)))


def test_sign_codes():
    x = torch.tensor([-1.5, 0.0, 2.0])
    codes = sign_codes(x)
    assert codes.dtype == torch.int8 and codes.tolist() == [-1, 1, 1]
    with pytest.raises(ValueError, match="'x'.*NaN"):
        sign_codes(torch.tensor([1.0, float('nan')]))
    with pytest.raises(ValueError, match="'x'.*NaN or Inf"):
        pack_sign_bits(torch.tensor([float('inf')]))
    with pytest.raises(TypeError, match="'x'.*floating"):
        sign_codes(torch.tensor([1, -1]))


# XOR edge features ###########################################################


@pytest.mark.parametrize('bits', [1, 5, 8, 21, 64])
def test_xor_is_negated_product(bits):
    # x_i XOR x_j on packed bits <-> -x_i * x_j on the signs (Eq. 17).
    x = signs(10, bits)
    gen = torch.Generator().manual_seed(1)
    edge_index = torch.randint(10, (2, 40), generator=gen)
    packed = xor_edge_features(pack_signs(x), edge_index)
    j, i = edge_index
    assert torch.equal(packed, pack_signs(-x[i] * x[j]))
    assert torch.equal(unpack_signs(packed, bits).float(), -x[i] * x[j])
    if bits % 8:  # padding bits stay zero
        assert not bool((packed[:, -1] >> (bits % 8)).any())


def test_xor_bad_input():
    with pytest.raises(TypeError, match="'x_packed'"):
        xor_edge_features(signs(3, 8), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="'edge_index'"):
        xor_edge_features(pack_signs(signs(3, 8)),
                          torch.zeros(3, dtype=torch.long))


def test_popcount():
    gen = torch.Generator().manual_seed(0)
    packed = torch.randint(0, 256, (6, 5), dtype=torch.uint8, generator=gen)
    expected = [sum(bin(int(b)).count('1') for b in row) for row in packed]
    out = popcount(packed)
    assert out.dtype == torch.int32 and out.tolist() == expected


# Binary matmul ###############################################################


@pytest.mark.parametrize('impl', IMPLS + ['auto'])
@pytest.mark.parametrize('bits', [1, 7, 8, 64, 100, 256])
def test_binary_matmul_equals_float_product(impl, bits):
    a, b = signs(13, bits, seed=bits), signs(9, bits, seed=bits + 1)
    expected = (a @ b.t()).to(torch.int32)
    for left in (pack_signs(a), a.to(torch.int8)):
        for right in (pack_signs(b), b.to(torch.int8)):
            out = binary_matmul(left, right, bits, impl=impl)
            assert out.dtype == torch.int32
            assert torch.equal(out, expected)


@pytest.mark.parametrize('rows', [5, 8, 21])
def test_int8_matmul_in_row_blocks_is_exact(monkeypatch, rows):
    if not backend().int8_gemm:
        pytest.skip('no int8 GEMM here')
    monkeypatch.setattr(binary_ops, '_GEMM_ROWS', 8)  # 1 to 3 blocks
    a, b = signs(rows, 24, seed=rows), signs(9, 24, seed=1)
    out = binary_matmul(a.to(torch.int8), b.to(torch.int8), 24, impl='int8')
    assert torch.equal(out, (a @ b.t()).to(torch.int32))


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 20), cols=st.integers(1, 20),
       bits=st.integers(1, 140), seed=st.integers(0, 1000))
def test_binary_matmul_is_hamming_identity(rows, cols, bits, seed):
    # <a, b> = d - 2 popcount(a XOR b), on every path.
    a, b = signs(rows, bits, seed), signs(cols, bits, seed + 1)
    hamming = (a.unsqueeze(1) != b.unsqueeze(0)).sum(-1)
    expected = (bits - 2 * hamming).to(torch.int32)
    for impl in IMPLS:
        assert torch.equal(
            binary_matmul(pack_signs(a), pack_signs(b), bits, impl), expected)


def test_popcount_matmul_works_in_chunks(monkeypatch):
    monkeypatch.setattr(binary_ops, '_CHUNK', 7)
    a, b = signs(11, 130), signs(5, 130, seed=1)
    assert torch.equal(binary_matmul(pack_signs(a), pack_signs(b), 130,
                                     impl='popcount'),
                       (a @ b.t()).to(torch.int32))


def test_binary_matmul_bad_input():
    a = signs(4, 8)
    with pytest.raises(ValueError, match="'a'.*-1 and \\+1"):
        binary_matmul(torch.zeros(4, 8, dtype=torch.int8), pack_signs(a), 8)
    with pytest.raises(ValueError, match="'b'.*shape"):
        binary_matmul(pack_signs(a), a.to(torch.int8)[:, :5], 8)
    with pytest.raises(TypeError, match="'a'.*uint8"):
        binary_matmul(a, pack_signs(a), 8)
    with pytest.raises(ValueError, match="'num_bits'"):
        binary_matmul(pack_signs(a), pack_signs(a), 9)
    with pytest.raises(ValueError, match="'num_bits'"):
        binary_matmul(pack_signs(a), pack_signs(a), 0)
    with pytest.raises(ValueError, match="'impl'"):
        binary_matmul(pack_signs(a), pack_signs(a), 8, impl='cuda')


# Backend #####################################################################


def test_backend_reports_what_runs_here():
    found = backend()
    assert isinstance(found, Backend) and found is backend()  # probed once
    try:
        torch._int_mm(torch.ones(2, 2, dtype=torch.int8),
                      torch.ones(2, 2, dtype=torch.int8))
        int8 = True
    except RuntimeError:
        int8 = False
    assert found.int8_gemm == int8
    np = pytest.importorskip('numpy')
    assert found.numpy_popcount == hasattr(np, 'bitwise_count')
    preferred = ('int8' if found.int8_gemm else
                 'popcount' if found.numpy_popcount else 'torch')
    assert found.binary_matmul == preferred
    assert found.hamming_knn in ('native', 'faiss', 'torch')


# Thresholds ##################################################################


def random_batch_norm(channels, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    norm = torch.nn.BatchNorm1d(channels).to(dtype).eval()
    with torch.no_grad():
        norm.running_mean.normal_(generator=gen)
        norm.running_var.uniform_(0.01, 3.0, generator=gen)
        norm.weight.normal_(generator=gen)
        norm.bias.normal_(generator=gen)
        norm.weight[0] = -abs(norm.weight[0])  # a falling channel
        norm.weight[1], norm.bias[1] = 0.0, -0.5  # constant -1
    return norm


def values_near(thresholds, rows, seed=0):
    r"""Random values, plus each threshold and its two neighbours among the
    values of the dtype (where rounding decides), shuffled."""
    gen = torch.Generator().manual_seed(seed)
    dtype = thresholds.dtype
    infinity = torch.tensor(float('inf'), dtype=dtype)
    below = torch.nextafter(thresholds, -infinity)
    above = torch.nextafter(thresholds, infinity)
    x = torch.cat([torch.randn(rows, thresholds.numel(), generator=gen,
                               dtype=dtype) * 3,
                   torch.stack([below, thresholds, above]).repeat(20, 1)])
    return x[torch.randperm(x.size(0), generator=gen)]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('channels', [6, 13, 128])
def test_thresholds_reproduce_the_sign_of_batch_norm(dtype, channels):
    norm = random_batch_norm(channels, dtype)
    thresholds, flips = binary_ops.sign_thresholds(norm, channels, dtype)
    assert thresholds.dtype == dtype and flips.dtype == torch.int8
    assert flips[0] == -1 and flips[1] == -1  # falling, constant -1
    x = values_near(thresholds, 500)
    with torch.no_grad():
        expected = sign_codes(norm(x), check=False)
    assert torch.equal(binary_ops.threshold_codes(x, thresholds, flips),
                       expected)


def test_thresholds_follow_the_batch_norm_equation():
    # sign(gamma (v - mu) / sqrt(var + eps) + beta) changes sign at
    # mu - beta sqrt(var + eps) / gamma: up for gamma > 0, down for < 0.
    norm = random_batch_norm(8, torch.float64, seed=3)
    thresholds, flips = binary_ops.sign_thresholds(norm, 8, torch.float64)
    rising = norm.weight > 0
    crossing = norm.running_mean - norm.bias * torch.sqrt(
        norm.running_var + norm.eps) / norm.weight
    assert torch.equal(flips[norm.weight != 0] > 0, rising[norm.weight != 0])
    moving = norm.weight != 0
    torch.testing.assert_close(thresholds[moving], crossing[moving].detach())


def test_thresholds_of_the_identity_are_signs():
    thresholds, flips = binary_ops.sign_thresholds(lambda v: v, 3)
    x = torch.tensor([[-0.0, 0.0, -1e-45], [float('inf'), -float('inf'),
                                            1e-45]])
    assert torch.equal(binary_ops.threshold_codes(x, thresholds, flips),
                       sign_codes(x, check=False))


def test_non_monotone_transforms_have_no_thresholds():
    # A zero scale maps every finite value to beta > 0 (+1) but infinities
    # to NaN (-1); a bump is not monotone at all.
    norm = random_batch_norm(4)
    with torch.no_grad():
        norm.weight[2], norm.bias[2] = 0.0, 0.5
    assert binary_ops.sign_thresholds(norm, 4) is None
    assert binary_ops.sign_thresholds(lambda v: 1 - v * v, 2) is None
