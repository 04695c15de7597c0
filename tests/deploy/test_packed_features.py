"""Tests of node features packed at each node's own bit width."""
import pickle

import pytest
import torch
from torch_geometric.nn import GCN

from pyg_qgnn import quantize_model
from pyg_qgnn.deploy import PackedFeatures, convert, load, nbytes, save
from pyg_qgnn.deploy import pack_features
from pyg_qgnn.schemes import A2Q, QAT


def deployed_codec(scheme, x, edge_index, widths=None):
    torch.manual_seed(0)
    model = quantize_model(GCN(x.size(1), 8, num_layers=2), scheme)
    model.train()
    model(x, edge_index)
    if widths is not None:  # every width from 1 to 8 bits, node by node
        quantizer = model.convs[0].input_quantizer
        quantizer.bit_width.data = widths.float()
    model.eval()
    return convert(model).convs[0].input_quantizer


def graph(nodes=40, features=13, nonnegative=False):
    torch.manual_seed(1)
    x = torch.randn(nodes, features) * torch.rand(nodes, 1) * 5
    return (x.relu() if nonnegative else x), torch.randint(0, nodes,
                                                           (2, 120))


@pytest.mark.parametrize('nonnegative', [False, True])
@pytest.mark.parametrize('scheme', [QAT(bits=8), QAT(bits=4), QAT(bits=3),
                                    'a2q'])
def test_unpack_gives_the_codes_of_the_codec(scheme, nonnegative):
    x, edge_index = graph(nonnegative=nonnegative)
    widths = None
    if scheme == 'a2q':
        scheme, widths = A2Q(init_bits=4), torch.arange(40) % 8 + 1
    codec = deployed_codec(scheme, x, edge_index, widths)
    packed = pack_features(codec, x)
    expected, got = codec.encode(x), packed.unpack()
    assert torch.equal(got.values, expected.values)
    assert torch.equal(got.step, expected.step)
    assert got.zero_point == expected.zero_point
    assert torch.equal(got.dequantize(), codec(x))


def test_bytes_follow_each_node_width():
    x, edge_index = graph(nodes=64, features=16)
    widths = torch.tensor([1, 2, 4, 8]).repeat_interleave(16)
    codec = deployed_codec(A2Q(init_bits=4), x, edge_index, widths)
    packed = pack_features(codec, x)
    code_bytes = 16 * (16 * 1 + 16 * 2 + 16 * 4 + 16 * 8) // 8
    tables = 64 * 1 + 64 * 4 + 4 + 1  # bits, steps, zero point, signed
    assert nbytes(packed) == code_bytes + tables
    assert nbytes(packed) < x.numel() * 4 / 3
    assert 'average bits=3.75' in repr(packed)


def test_save_load_round_trip_runs_no_pickle(tmp_path, monkeypatch):
    x, edge_index = graph()
    codec = deployed_codec(A2Q(init_bits=4), x, edge_index,
                           torch.arange(40) % 8 + 1)
    packed = pack_features(codec, x)
    save(packed, tmp_path / 'x.safetensors')

    def forbidden(*args, **kwargs):
        raise AssertionError('pickle used while loading')

    monkeypatch.setattr(pickle, 'loads', forbidden)
    monkeypatch.setattr(torch, 'load', forbidden)
    fresh = load(tmp_path / 'x.safetensors', PackedFeatures(x.size(1)))
    assert torch.equal(fresh.unpack().values, packed.unpack().values)


def test_bad_arguments_are_named():
    x, edge_index = graph()
    codec = deployed_codec(QAT(bits=8), x, edge_index)
    with pytest.raises(TypeError, match="'codec'"):
        pack_features(torch.nn.Identity(), x)
    with pytest.raises(ValueError, match="'x'"):
        pack_features(codec, x.view(-1))
    with pytest.raises(ValueError, match='NaN'):
        pack_features(codec, torch.full_like(x, float('nan')))
