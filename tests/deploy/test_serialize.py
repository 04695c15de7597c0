import json
import os
import pickle
import random

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch_geometric.nn.models import GCN

from pyg_qgnn import QAT, calibrate, quantize_model
from pyg_qgnn.deploy import load, save


def graph(num_nodes=30, num_edges=90, channels=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, channels, generator=gen)
    edge_index = torch.randint(num_nodes, (2, num_edges), generator=gen)
    y = torch.randint(4, (num_nodes, ), generator=gen)
    return x, edge_index, y


def build(scheme=None, in_channels=16, hidden=32, num_layers=2, out=4,
          seed=0):
    torch.manual_seed(seed)
    model = GCN(in_channels, hidden, num_layers=num_layers, out_channels=out)
    return model if scheme is None else quantize_model(model, scheme)


def trained(scheme, steps=3):
    x, edge_index, y = graph()
    model = build(scheme)
    calibrate(model, x, edge_index)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x, edge_index), y)
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def output(model):
    x, edge_index, _ = graph(seed=1)
    return model.eval()(x, edge_index)


# Round trips #################################################################


@pytest.mark.parametrize('observer', ['abs', 'mom', 'per'])
@pytest.mark.parametrize('bits', [8, 4, 3, 2])
def test_round_trip_is_exact(tmp_path, bits, observer):
    scheme = QAT(bits=bits, observer=observer)
    model = trained(scheme)
    expected = output(model)
    path = tmp_path / 'model.safetensors'
    size = save(model, path)
    assert size == os.path.getsize(path)

    fresh = build(scheme, seed=1)
    assert not torch.equal(fresh.convs[0].lin.weight,
                           model.convs[0].lin.weight)
    assert load(path, fresh) is fresh
    assert torch.equal(output(fresh), expected)
    # Twice in a row (the loaded weights' range stays pinned).
    assert torch.equal(output(fresh), expected)


def test_round_trip_with_str_path_and_message_quantizer(tmp_path):
    scheme = QAT(bits=4, points=('input', 'weight', 'message', 'aggregate',
                                 'output'))
    model = trained(scheme)
    path = str(tmp_path / 'model.safetensors')
    save(model, path)
    fresh = load(path, build(scheme, seed=1))
    assert torch.equal(output(fresh), output(model))


def test_loaded_model_keeps_training(tmp_path):
    scheme = QAT(bits=4)
    model = trained(scheme)
    save(model, tmp_path / 'm.safetensors')
    fresh = load(tmp_path / 'm.safetensors', build(scheme, seed=1))
    before = fresh.convs[0].lin.weight.clone()
    x, edge_index, y = graph()
    fresh.train()
    optimizer = torch.optim.SGD(fresh.parameters(), lr=0.5)
    loss = torch.nn.functional.cross_entropy(fresh(x, edge_index), y)
    loss.backward()
    optimizer.step()
    assert not torch.equal(fresh.convs[0].lin.weight, before)
    assert torch.isfinite(output(fresh)).all()


def test_float_model_round_trips(tmp_path):
    model = trained(None)
    path = tmp_path / 'float.safetensors'
    assert save(model, path) == os.path.getsize(path)
    fresh = load(path, build(None, seed=1))
    assert torch.equal(output(fresh), output(model))
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


# File size and format ########################################################


def test_packed_file_is_small(tmp_path):
    x = torch.randn(50, 1000)
    edge_index = torch.randint(50, (2, 200))
    float_model = build(None, in_channels=1000, hidden=64, out=8)
    float_size = save(float_model, tmp_path / 'float.safetensors')
    sizes = {}
    for bits in (8, 4, 2):
        model = quantize_model(float_model, QAT(bits=bits))
        calibrate(model, x, edge_index)
        sizes[bits] = save(model, tmp_path / f'int{bits}.safetensors')
    assert float_size > 4 * 1000 * 64
    assert sizes[8] < 0.3 * float_size
    assert sizes[4] < 0.17 * float_size
    assert sizes[2] < sizes[4] < sizes[8]


def test_file_is_safetensors_with_codes(tmp_path):
    model = trained(QAT(bits=4))
    path = tmp_path / 'model.safetensors'
    save(model, path)
    with safe_open(str(path), framework='pt') as f:
        metadata = f.metadata()
        keys = set(f.keys())
        codes = f.get_tensor('convs.0.lin.weight.codes')
        bias = f.get_tensor('convs.0.bias')
    assert metadata['format'] == 'pyg_qgnn'
    assert set(json.loads(metadata['packed'])) == {'convs.0.lin.weight',
                                                   'convs.1.lin.weight'}
    for i in range(2):
        assert f'convs.{i}.lin.weight.codes' in keys
        assert f'convs.{i}.lin.weight' not in keys
    assert codes.dtype == torch.uint8
    assert codes.numel() == (32 * 16) // 2  # two 4-bit codes per byte
    assert bias.dtype == torch.float32
    assert torch.equal(bias, model.convs[0].bias)
    assert 'convs.0.input_quantizer.scale' in keys


# Bad files ###################################################################


def test_truncated_file_raises(tmp_path):
    path = tmp_path / 'model.safetensors'
    save(trained(QAT(bits=8)), path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='not a readable safetensors'):
        load(path, build(QAT(bits=8)))


@pytest.mark.parametrize('data', [
    random.Random(0).randbytes(1000),
    b'',
    b'\x05\x00\x00\x00\x00\x00\x00\x00{"a":',
    (10).to_bytes(8, 'little') + b'not json!!',
])
def test_garbage_file_raises(tmp_path, data):
    path = tmp_path / 'model.safetensors'
    path.write_bytes(data)
    with pytest.raises(ValueError, match='not a readable safetensors'):
        load(path, build(QAT(bits=8)))


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / 'nope.safetensors', build(QAT(bits=8)))


def test_foreign_safetensors_file_raises(tmp_path):
    path = tmp_path / 'foreign.safetensors'
    save_file(build(None).state_dict(), str(path))
    with pytest.raises(ValueError, match='not written by pyg_qgnn'):
        load(path, build(None))
    save_file({'w': torch.zeros(3)}, str(path), metadata={'format': 'pt'})
    with pytest.raises(ValueError, match='not written by pyg_qgnn'):
        load(path, build(None))


def test_unsupported_version_raises(tmp_path):
    path = tmp_path / 'model.safetensors'
    save_file({'w': torch.zeros(3)}, str(path),
              metadata={'format': 'pyg_qgnn', 'version': '99', 'packed': '{}'})
    with pytest.raises(ValueError, match='version'):
        load(path, build(None))


def test_corrupt_packed_metadata_raises(tmp_path):
    path = tmp_path / 'model.safetensors'
    save_file({'w': torch.zeros(3)}, str(path),
              metadata={'format': 'pyg_qgnn', 'version': '1',
                        'packed': '{oops'})
    with pytest.raises(ValueError, match="'packed'"):
        load(path, build(None))


def test_int8_checkpoint_into_int4_model_of_other_shape_raises(tmp_path):
    path = tmp_path / 'int8.safetensors'
    save(trained(QAT(bits=8)), path)
    model = build(QAT(bits=4), hidden=64)
    with pytest.raises(ValueError, match='shape'):
        load(path, model)


def test_int8_checkpoint_into_int4_model_raises(tmp_path):
    # Same architecture, other bit width: the 8-bit codes do not fit the
    # model's 4-bit grid, so loading must not silently clip them.
    path = tmp_path / 'int8.safetensors'
    save(trained(QAT(bits=8)), path)
    with pytest.raises(ValueError, match='bit|qmin|scheme'):
        load(path, build(QAT(bits=4)))


@pytest.mark.parametrize('kwargs', [dict(num_layers=3), dict(out=5)])
def test_other_architecture_raises(tmp_path, kwargs):
    path = tmp_path / 'model.safetensors'
    save(trained(QAT(bits=8)), path)
    with pytest.raises(ValueError, match='checkpoint'):
        load(path, build(QAT(bits=8), **kwargs))


def test_quantized_checkpoint_into_float_model_raises(tmp_path):
    path = tmp_path / 'model.safetensors'
    save(trained(QAT(bits=8)), path)
    with pytest.raises(ValueError, match='scheme'):
        load(path, build(None))


def test_corrupt_codes_raise(tmp_path):
    path = tmp_path / 'model.safetensors'
    save(trained(QAT(bits=8)), path)
    with safe_open(str(path), framework='pt') as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors['convs.0.lin.weight.codes'] = tensors[
        'convs.0.lin.weight.codes'][:10].clone()
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ValueError, match='corrupt'):
        load(path, build(QAT(bits=8)))


def test_load_does_not_unpickle(tmp_path, monkeypatch):
    scheme = QAT(bits=4)
    model = trained(scheme)
    path = tmp_path / 'model.safetensors'
    save(model, path)

    def forbidden(*args, **kwargs):
        raise AssertionError('pickle used while loading')

    monkeypatch.setattr(pickle, 'load', forbidden)
    monkeypatch.setattr(pickle, 'loads', forbidden)
    monkeypatch.setattr(pickle, 'Unpickler', forbidden)
    monkeypatch.setattr(torch, 'load', forbidden)
    fresh = load(path, build(scheme, seed=1))
    assert torch.equal(output(fresh), output(model))


def test_save_rejects_non_module(tmp_path):
    with pytest.raises(TypeError, match="'model'"):
        save({'w': torch.zeros(1)}, tmp_path / 'x.safetensors')


# Files as a user expects them ################################################


def test_file_mode_follows_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        save(trained(QAT(bits=4)), tmp_path / 'a.safetensors')
        os.umask(0o077)
        save(trained(QAT(bits=4)), tmp_path / 'b.safetensors')
    finally:
        os.umask(previous)
    assert (tmp_path / 'a.safetensors').stat().st_mode & 0o777 == 0o644
    assert (tmp_path / 'b.safetensors').stat().st_mode & 0o777 == 0o600


def test_save_into_missing_folder_names_the_users_path(tmp_path):
    path = tmp_path / 'missing' / 'model.safetensors'
    with pytest.raises(FileNotFoundError) as info:
        save(trained(QAT(bits=4)), path)
    assert repr(str(path)) in str(info.value)
    assert '.tmp' not in str(info.value)


def test_training_mode_saves_the_same_bytes(tmp_path):
    model = trained(QAT(bits=4))
    save(model.eval(), tmp_path / 'eval.safetensors')
    save(model.train(), tmp_path / 'train.safetensors')
    # safetensors orders the metadata entries at random: compare contents.
    contents = []
    for name in ('eval', 'train'):
        with safe_open(tmp_path / f'{name}.safetensors', framework='pt') as f:
            contents.append((f.metadata(),
                             {k: f.get_tensor(k) for k in f.keys()}))
    assert contents[0][0] == contents[1][0]
    assert contents[0][1].keys() == contents[1][1].keys()
    for key, value in contents[0][1].items():
        assert torch.equal(value, contents[1][1][key]), key


def test_other_depth_lists_the_layers_on_each_side(tmp_path):
    path = tmp_path / 'model.safetensors'
    save(trained(QAT(bits=4)), path)  # 2 layers
    deeper = build(QAT(bits=4), num_layers=3)
    with pytest.raises(ValueError) as info:
        load(path, deeper)
    message = str(info.value)
    assert 'different layers' in message
    assert "only in 'model' ['convs.2'" in message
    assert 'only in the checkpoint []' in message
    assert 'quantization scheme' not in message
