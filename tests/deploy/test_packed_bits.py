"""Tests of pyg_qgnn.deploy.packed_bits: the packed-bit aggregation, popcount
product and thresholded packing against plain float references, with the
AVX-512 and the portable loops of the kernels."""
import pytest
import torch

from pyg_qgnn.deploy import packed_bits
from pyg_qgnn.deploy.binary_ops import pack_codes
from pyg_qgnn.deploy.integer_graph import to_csr

CHANNELS = [1, 7, 8, 63, 64, 65, 200, 600]


@pytest.fixture(params=['native', 'portable'], autouse=True)
def kernels(request, monkeypatch):
    flags = list(packed_bits._FLAGS)
    if request.param == 'portable':
        flags.append('-mno-avx512f')  # the loops without intrinsics
    built = packed_bits.build_kernels(tuple(flags))
    if built is None:
        pytest.skip('no C compiler')
    monkeypatch.setattr(packed_bits, 'packed_kernels', lambda: built)


def signs(*shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(*shape, generator=gen) < 0.5, 1,
                       -1).to(torch.int8)


def graph(num_nodes, seed=0):
    r"""Random edges among all but 20 (isolated) nodes, and one node with
    600 sources (more than a byte counter holds)."""
    gen = torch.Generator().manual_seed(seed)
    edges = torch.randint(num_nodes - 20, (2, 3000), generator=gen)
    hub = torch.randint(num_nodes - 20, (2, 600), generator=gen)
    hub[1] = 3
    return torch.cat([edges, hub], dim=1)


def reference_aggregate(codes, edge_index, reduce):
    r"""The float aggregation of PyG's scatter."""
    num_nodes, channels = codes.shape
    target = edge_index[1]
    messages = codes[edge_index[0]].float()
    degree = torch.zeros(num_nodes).index_add_(
        0, target, torch.ones(target.numel()))
    if reduce == 'max':
        out = torch.full((num_nodes, channels), -2.0).scatter_reduce(
            0, target.view(-1, 1).expand(-1, channels), messages, 'amax')
        return torch.where(degree.view(-1, 1) > 0, out, 0.0)
    out = torch.zeros(num_nodes, channels).index_add_(0, target, messages)
    return out / degree.clamp(min=1).view(-1, 1) if reduce == 'mean' else out


@pytest.mark.parametrize('reduce', ['sum', 'mean', 'max'])
@pytest.mark.parametrize('channels', CHANNELS)
def test_aggregate_bits_equals_float_reference(channels, reduce):
    num_nodes = 120
    codes = signs(num_nodes, channels)
    edge_index = graph(num_nodes)
    thresholds = torch.randn(channels, generator=torch.Generator()
                             .manual_seed(1)) * 0.5
    thresholds[::7] = float('-inf')
    thresholds[3::11] = float('inf')
    value = reference_aggregate(codes, edge_index, reduce)
    expected = pack_codes(torch.where(value >= thresholds, 1, -1))
    # Written into a wider buffer at an offset, as the deployed layer does.
    width = 8 * packed_bits.words(channels)
    out = torch.full((num_nodes, width + 16), 255, dtype=torch.uint8)
    packed_bits.aggregate_bits(pack_codes(codes),
                               to_csr(edge_index, (num_nodes, num_nodes)),
                               channels, reduce, thresholds, out[:, 16:])
    assert torch.equal(out[:, :16], torch.full((num_nodes, 16), 255,
                                               dtype=torch.uint8))
    assert torch.equal(out[:, 16:16 + expected.size(1)], expected)
    assert not out[:, 16 + expected.size(1):].any()  # zero padding


@pytest.mark.parametrize('channels', CHANNELS)
def test_popcount_matmul_equals_float_product(channels):
    # Two word-padded parts, as the root and aggregate halves of h.
    rows, out_channels = 50, 37
    first, second = signs(rows, channels), signs(rows, 13, seed=1)
    weight = signs(out_channels, channels + 13, seed=2)
    packed = torch.cat([packed_bits.pad_to_words(pack_codes(first), channels),
                        packed_bits.pad_to_words(pack_codes(second), 13)], 1)
    blocks = packed_bits.weight_blocks([weight[:, :channels],
                                        weight[:, channels:]])
    product = torch.cat([first, second], 1).float() @ weight.float().t()
    out = packed_bits.popcount_matmul(packed, blocks, channels + 13,
                                      out_channels)
    assert out.dtype == torch.int32
    assert torch.equal(out, product.int())
    thresholds = torch.randint(-5, 5, (out_channels, ))
    flips = signs(out_channels, seed=3)
    out = packed_bits.popcount_matmul(packed, blocks, channels + 13,
                                      out_channels, thresholds, flips)
    expected = torch.where(product >= thresholds, 1, -1).to(torch.int8)
    assert torch.equal(out, pack_codes(expected * flips))


@pytest.mark.parametrize('channels', CHANNELS)
def test_threshold_pack_equals_reference(channels):
    gen = torch.Generator().manual_seed(channels)
    x = torch.randn(40, channels, generator=gen)
    thresholds = torch.randn(channels, generator=gen)
    thresholds[::5] = float('inf')
    flips = signs(channels)
    expected = torch.where(x >= thresholds, 1, -1).to(torch.int8) * flips
    assert torch.equal(packed_bits.threshold_pack(x, thresholds, flips),
                       pack_codes(expected))
    assert torch.equal(packed_bits.threshold_pack(x, thresholds),
                       pack_codes(torch.where(x >= thresholds, 1, -1)))


def test_empty_inputs():
    csr = to_csr(torch.empty(2, 0, dtype=torch.long), (0, 0))
    out = torch.empty(0, 8, dtype=torch.uint8)
    packed_bits.aggregate_bits(torch.empty(0, 1, dtype=torch.uint8), csr, 5,
                               'mean', torch.zeros(5), out)
    blocks = packed_bits.weight_blocks([signs(3, 5)])
    assert packed_bits.popcount_matmul(out, blocks, 5, 3).shape == (0, 3)


def test_a_too_narrow_output_is_refused():
    csr = to_csr(torch.tensor([[0], [1]]), (2, 2))
    with pytest.raises(ValueError, match="'out' must be"):
        packed_bits.aggregate_bits(pack_codes(signs(2, 70)), csr, 70, 'sum',
                                   torch.zeros(70),
                                   torch.empty(2, 8, dtype=torch.uint8))
