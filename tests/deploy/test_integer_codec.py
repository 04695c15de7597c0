"""Tests of the integer codes of the deployed layers
(pyg_qgnn.deploy.integer_codec): an IntegerCodec gives its trained
quantizer's evaluation output and codes bit for bit, on the calibration
graph and on one of another size; an IntegerWeight stores packed codes
and gives back the twin's fake-quantized weight bit for bit."""
import math

import pytest
import torch
from torch_geometric.nn import Linear

from pyg_qgnn import quantize_model
from pyg_qgnn.deploy import Codes, IntegerCodec, IntegerWeight, convert, nbytes
from pyg_qgnn.deploy.integer_codec import MAX_GEMM_DEPTH
from pyg_qgnn.quantizers import (
    A2QQuantizer,
    DegreeQuantizer,
    IntegerQuantizer,
    SignQuantizer,
)
from pyg_qgnn.schemes import A2Q, QAT


pytestmark = pytest.mark.usefixtures('one_thread')


def features(num_nodes, seed=0, scale=3.):
    r"""Node features of very different magnitudes per node (A²Q's nodes
    then pick different pairs), some beyond any calibrated range."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, 12, generator=gen)
    return x * torch.rand(num_nodes, 1, generator=gen) * scale


def a2q(num_groups=None, signed=None, seed=0):
    r"""An :class:`A2QQuantizer` with widths from 1 to 8 bits and steps
    moved from their initial values, as training leaves them."""
    quantizer = A2QQuantizer(4, num_groups=num_groups, signed=signed)
    x = features(30, seed=seed)
    quantizer(x.relu() if signed is False else x)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        size = quantizer.bit_width.numel()
        quantizer.bit_width.copy_(torch.randint(1, 9, (size, ),
                                                generator=gen).float())
        quantizer.log_step.add_(0.5 * torch.randn(size, generator=gen))
    return quantizer


def calibrated(quantizer, unsigned_data=False):
    x = features(30)
    quantizer.train()
    quantizer(x.relu() if unsigned_data else x)
    return quantizer.eval()


QUANTIZERS = {
    'signed_8': lambda: calibrated(IntegerQuantizer(8)),
    'signed_4_percentile': lambda: calibrated(IntegerQuantizer(
        4, observer='per')),
    'signed_2': lambda: calibrated(IntegerQuantizer(2)),
    'symmetric_4': lambda: calibrated(IntegerQuantizer(4, symmetric=True)),
    'lsq_4': lambda: calibrated(IntegerQuantizer(4, grad='lsq')),
    'unsigned_8': lambda: calibrated(IntegerQuantizer(8, signed=False), True),
    'unsigned_3': lambda: calibrated(IntegerQuantizer(3, signed=False), True),
    'degree_quant_8': lambda: calibrated(DegreeQuantizer(8)),
    'degree_quant_4': lambda: calibrated(DegreeQuantizer(4, observer='mom')),
    'a2q_per_node': lambda: a2q(),
    'a2q_per_node_unsigned': lambda: a2q(signed=False),
    'a2q_groups': lambda: a2q(num_groups=5),
    'a2q_groups_unsigned': lambda: a2q(num_groups=5, signed=False),
}


def trained_codes(quantizer, x):
    r"""The trained quantizer's codes of :obj:`x` as :obj:`int16`."""
    return quantizer.quantize(x).to(torch.int16)


# IntegerCodec ###############################################################


@pytest.mark.parametrize('num_nodes', [30, 17], ids=['same_graph',
                                                     'other_graph'])
@pytest.mark.parametrize('name', QUANTIZERS)
def test_codec_reproduces_the_trained_quantizer(name, num_nodes):
    quantizer = QUANTIZERS[name]()
    codec = IntegerCodec.from_quantizer(quantizer)
    x = features(num_nodes, seed=1)
    expected = quantizer(x)
    assert torch.equal(codec(x), expected)
    assert torch.equal(codec.fake_(x.clone()), expected)
    codes = codec.encode(x)
    assert isinstance(codes, Codes) and codes.values.dtype == torch.int8
    assert torch.equal(codes.dequantize(), expected)
    # Unsigned codes are stored shifted into int8.
    shift = 0 if 'unsigned' not in name else -128
    assert codec.shift == shift
    assert torch.equal(codes.values.to(torch.int16) - shift,
                       trained_codes(quantizer, x))


def test_per_node_codec_follows_node_ids_on_its_graph():
    # The pair of node i is pair i: reversing the nodes changes the steps.
    quantizer = a2q()
    codec = IntegerCodec.from_quantizer(quantizer)
    x = features(30, seed=1)
    codes = codec.encode(x)
    assert torch.equal(codes.step.view(-1), quantizer.step)
    flipped = codec.encode(x.flip(0))
    assert torch.equal(flipped.step, codes.step)
    assert torch.equal(codec(x.flip(0)), quantizer(x.flip(0)))


def test_codec_state_loads_into_a_fresh_codec():
    for quantizer, fresh in [
            (a2q(num_groups=5), IntegerCodec('a2q', True, num_groups=5)),
            (a2q(signed=False), IntegerCodec('a2q', False)),
            (calibrated(IntegerQuantizer(4)),
             IntegerCodec('affine', True, qmin=-8, qmax=7))]:
        codec = IntegerCodec.from_quantizer(quantizer)
        fresh.load_state_dict(codec.state_dict())
        x = features(23, seed=2)
        assert torch.equal(fresh(x), codec(x))


def test_codec_repr_shows_the_code_range_or_widths():
    assert IntegerCodec.from_quantizer(QUANTIZERS['unsigned_3']()) \
        .extra_repr() == 'affine, codes=[0, 7], signed=False'
    quantizer = a2q(num_groups=5)
    low, high = (int(b) for b in quantizer.rounded_bits().aminmax())
    assert low < high
    assert IntegerCodec.from_quantizer(quantizer).extra_repr() == \
        f'a2q, bits={low}..{high}, groups=5'


def test_empty_features_pass_through():
    codec = IntegerCodec.from_quantizer(QUANTIZERS['signed_8']())
    empty = torch.empty(0, 12)
    assert codec(empty).shape == (0, 12)
    assert codec.fake_(empty).shape == (0, 12)


def test_codec_errors_name_the_quantizer():
    with pytest.raises(ValueError, match="'kind' must be 'affine' or 'a2q'"):
        IntegerCodec('log', True)
    with pytest.raises(ValueError, match="'input_quantizer' has never seen "
                       "data.*before convert"):
        IntegerCodec.from_quantizer(IntegerQuantizer(8), 'input_quantizer')
    with pytest.raises(ValueError, match="'aggregate_quantizer' has never "
                       "seen data"):
        IntegerCodec.from_quantizer(A2QQuantizer(4), 'aggregate_quantizer')
    with pytest.raises(TypeError, match="'input_quantizer' is a "
                       "SignQuantizer, which has no integer form"):
        IntegerCodec.from_quantizer(SignQuantizer(), 'input_quantizer')
    with pytest.raises(ValueError, match="granularity 'channel'.*one fixed "
                       "range per tensor"):
        IntegerCodec.from_quantizer(
            calibrated(IntegerQuantizer(8, granularity='channel')))
    with pytest.raises(ValueError, match="a dynamic range"):
        IntegerCodec.from_quantizer(
            calibrated(IntegerQuantizer(8, dynamic=True)))
    codec = IntegerCodec.from_quantizer(a2q())
    with pytest.raises(ValueError, match=r"'x' must be a \(nodes, features\) "
                       r"matrix for per-node steps"):
        codec.encode(torch.randn(30, 4, 3))
    with pytest.raises(TypeError, match="'x'"):
        codec.encode(torch.ones(30, 12, dtype=torch.long))


# IntegerWeight ###############################################################


def weight_quantizer(bits, granularity):
    return IntegerQuantizer(bits, symmetric=True, dynamic=True,
                            observer='abs', granularity=granularity,
                            channel_axis=0)


@pytest.mark.parametrize('bits,width', [(2, 2), (3, 4), (4, 4), (5, 8),
                                        (8, 8)])
@pytest.mark.parametrize('granularity', ['tensor', 'channel'])
def test_weight_is_stored_packed(bits, width, granularity):
    # 7 x 13 = 91 codes: the last byte of 2- and 4-bit codes is part padding.
    weight = torch.randn(7, 13)
    quantizer = weight_quantizer(bits, granularity).eval()
    stored = IntegerWeight.from_quantizer(weight, quantizer)
    assert stored.width == width
    assert stored.packed.dtype == torch.uint8
    assert stored.packed.numel() == math.ceil(7 * 13 * width / 8)
    assert stored.step.numel() == (7 if granularity == 'channel' else 1)
    assert nbytes(stored) == stored.packed.numel() + 4 * stored.step.numel()
    codes = stored.codes()
    assert codes.dtype == torch.int8 and codes.shape == (7, 13)
    assert torch.equal(codes, quantizer.quantize(weight))
    assert int(codes.min()) >= -(1 << (bits - 1))
    assert int(codes.max()) <= (1 << (bits - 1)) - 1
    assert torch.equal(stored.row_sums(), codes.sum(dim=1,
                                                    dtype=torch.int32))
    assert torch.equal(stored.dequantize(), quantizer(weight))
    assert stored.extra_repr() == (
        f'7x13, bits={bits}, stored as {width}-bit codes, step per '
        f'{granularity}')


@pytest.mark.parametrize('scheme', [QAT(2), QAT(3), QAT(4), QAT(8),
                                    A2Q(weight_bits=3), A2Q(weight_bits=8)],
                         ids=['qat2', 'qat3', 'qat4', 'qat8', 'a2q3', 'a2q8'])
def test_deployed_weight_equals_the_twins_fake_quantized_weight(scheme):
    torch.manual_seed(0)
    twin = quantize_model(Linear(13, 7), scheme)
    twin(torch.randn(30, 13))
    twin.eval()
    deployed = convert(twin)
    expected = twin.weight_quantizer(twin.weight).detach()
    assert torch.equal(deployed.weight.dequantize(), expected)


def test_unpacked_codes_follow_a_loaded_state():
    quantizer = weight_quantizer(4, 'channel')
    first = IntegerWeight.from_quantizer(torch.randn(7, 13), quantizer)
    second = IntegerWeight.from_quantizer(torch.randn(7, 13), quantizer)
    before = first.codes().clone()  # unpacked, and cached
    packed = first.packed.clone()
    assert not torch.equal(before, second.codes())
    first.load_state_dict(second.state_dict())
    assert torch.equal(first.codes(), second.codes())
    assert torch.equal(first.row_sums(), second.row_sums())
    assert torch.equal(first.dequantize(), second.dequantize())
    # A fresh weight (empty, lazily shaped buffers) loads it too.
    fresh = IntegerWeight(4, (7, 13))
    fresh.load_state_dict(second.state_dict())
    assert torch.equal(fresh.dequantize(), second.dequantize())
    # So does an edit of the packed codes in place.
    first.packed.copy_(packed)
    assert torch.equal(first.codes(), before)


def test_weight_errors_name_the_argument():
    weight = torch.randn(7, 13)
    with pytest.raises(ValueError, match="'weight_quantizer' is not "
                       "symmetric.*zero point 0"):
        IntegerWeight.from_quantizer(weight, IntegerQuantizer(8))
    with pytest.raises(TypeError, match="'weight_quantizer' is a "
                       "A2QQuantizer; integer weights need an "
                       "IntegerQuantizer"):
        IntegerWeight.from_quantizer(weight, A2QQuantizer(4))
    with pytest.raises(ValueError, match=r"'weight' must be a matrix \(got "
                       r"shape \(7, 13, 1\)\)"):
        IntegerWeight.from_quantizer(weight.unsqueeze(-1),
                                     weight_quantizer(8, 'tensor'))
    per_input = IntegerQuantizer(8, symmetric=True, dynamic=True,
                                 granularity='channel', channel_axis=1)
    with pytest.raises(ValueError, match="one step per output channel"):
        IntegerWeight.from_quantizer(weight, per_input)
    deep = torch.randn(1, MAX_GEMM_DEPTH + 1)
    with pytest.raises(ValueError, match=f"'weight' has {MAX_GEMM_DEPTH + 1} "
                       f"input features; int32 accumulation holds at most "
                       f"{MAX_GEMM_DEPTH}"):
        IntegerWeight.from_quantizer(deep, weight_quantizer(8, 'tensor'))
