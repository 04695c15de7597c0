import json
import re

import pytest
import safetensors.torch
import torch

from pyg_qgnn import deploy
from pyg_qgnn.deploy.lightgnn import DeployedLightGNN, item_dtype
from pyg_qgnn.metrics import top_k
from pyg_qgnn.nn.models.lightgnn import LightGNN
from pyg_qgnn.prune.lightgnn import prune_entries, prune_pairs

U, I, D, L = 7, 5, 6, 2  # d = 6: a one-byte bitmap row with 2 spare bits
PAIRS = torch.tensor([(0, 0), (0, 1), (0, 3), (1, 0), (1, 2), (2, 1),
                      (2, 2), (2, 3), (3, 0), (3, 3), (4, 1), (4, 2),
                      (5, 0), (5, 3), (3, 2), (6, 4), (6, 1)]).t()

pytestmark = pytest.mark.usefixtures('one_thread')


def train_a_bit(model, steps=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        pos = PAIRS[:, torch.randint(PAIRS.size(1), (16, ), generator=gen)]
        neg = torch.stack([pos[0], torch.randint(I, (16, ), generator=gen)])
        loss = -torch.nn.functional.logsigmoid(model(pos) - model(neg)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def pruned_and_trained(edge_value_dtype=torch.float32):
    torch.manual_seed(0)
    model = LightGNN(U, I, PAIRS, embedding_dim=D, num_layers=L,
                     alpha=torch.tensor([0.5, 0.3, 0.2]),
                     edge_value_dtype=edge_value_dtype)
    prune_pairs(model, 0.7, torch.randn(PAIRS.size(1)))
    prune_entries(model, 0.55)
    return train_a_bit(model).eval()


@pytest.fixture(scope='module')
def trained():
    r"""A pruned LightGNN (12 of 17 edges, 40 of 72 entries), trained a
    few steps, in evaluation mode."""
    return pruned_and_trained()


@pytest.fixture(scope='module')
def trained_half():
    r"""The same with its edge values in float16."""
    return pruned_and_trained(torch.float16)


def embedding_of(model):
    with torch.no_grad():
        return model.get_embedding()


def test_embeddings_equal_the_trained_model(trained):
    assert not torch.all(trained.edge_weight == 1)  # it did train
    expected = embedding_of(trained)
    deployed = DeployedLightGNN.from_trained(trained)
    assert torch.equal(deployed.get_embedding(), expected)
    assert deployed.get_embedding() is deployed.get_embedding()  # cached
    converted = deploy.convert(trained)  # through the registry
    assert isinstance(converted, DeployedLightGNN)
    assert torch.equal(converted.get_embedding(), expected)
    assert torch.equal(embedding_of(trained), expected)  # model untouched
    with torch.no_grad():
        assert torch.equal(deployed.layer0(), trained.embedding.weight)
    assert list(deployed.parameters()) == []


def test_float16_edge_values(trained_half, trained, tmp_path):
    expected = embedding_of(trained_half)
    assert not torch.equal(expected, embedding_of(trained))  # it rounds
    deployed = deploy.convert(trained_half)
    assert deployed.edge_values.dtype == torch.float16
    assert torch.equal(deployed.get_embedding(), expected)
    assert deploy.nbytes(deployed) == deploy.nbytes(deploy.convert(
        trained)) - 12 * 2  # two bytes less per kept edge
    assert 'values float16)' in repr(deployed)
    path = tmp_path / 'half.safetensors'
    deployed.save(path)
    loaded = DeployedLightGNN.load(path)
    assert loaded.edge_values.dtype == torch.float16
    assert torch.equal(loaded.edge_values, deployed.edge_values)
    assert torch.equal(loaded.get_embedding(), expected)


def test_files_without_an_edge_value_dtype_are_float32(trained, tmp_path):
    # as version 1 files were written before the setting existed
    path = tmp_path / 'old.safetensors'
    deploy.convert(trained).save(path)
    with safetensors.safe_open(path, framework='pt') as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k)
                                           for k in f.keys()}
    config = json.loads(metadata['config'])
    assert config.pop('edge_value_dtype') == 'float32'
    safetensors.torch.save_file(tensors, path, dict(
        metadata, config=json.dumps(config)))
    loaded = DeployedLightGNN.load(path)
    assert loaded.edge_value_dtype == torch.float32
    assert torch.equal(loaded.get_embedding(), embedding_of(trained))


def test_stored_graph_is_the_kept_edges(trained):
    deployed = DeployedLightGNN.from_trained(trained)
    kept = trained.kept_pairs()
    assert deployed.user_items.numel() == 12 == kept.size(1)
    pairs = deployed.kept_pairs()
    key = pairs[0] * I + pairs[1]
    assert bool((key[1:] > key[:-1]).all())  # sorted by (user, item)
    assert torch.equal(key, torch.sort(kept[0] * I + kept[1]).values)
    assert deployed.user_counts.tolist() == torch.bincount(
        kept[0], minlength=U).tolist()
    with torch.no_grad():
        values = trained.normalized_weight()
    order = torch.argsort(kept[0] * I + kept[1])
    assert torch.equal(deployed.edge_values, values[order])


def test_forward_and_recommend(trained):
    deployed = deploy.convert(trained)
    index = torch.tensor([[0, 6, 3, 5, 2], [4, 0, 2, 1, 3]])
    with torch.no_grad():
        assert torch.equal(deployed(index), trained(index))
    out = embedding_of(trained)
    users = torch.tensor([0, 2, 3, 6, 6])
    expected = top_k(out[:U], out[U:], 2, users, PAIRS)
    got = deployed.recommend(users, k=2, exclude=PAIRS)
    assert torch.equal(got, expected)
    seen = set(map(tuple, PAIRS.t().tolist()))
    for user, items in zip(users.tolist(), got.tolist()):
        assert not any((user, item) in seen for item in items)
    assert torch.equal(deployed.recommend(torch.arange(U), 5),
                       top_k(out[:U], out[U:], 5))
    with pytest.raises(ValueError, match="'users'"):
        deployed.recommend(torch.tensor([U]))


def test_save_load_round_trip(trained, tmp_path):
    deployed = deploy.convert(trained)
    path = tmp_path / 'lightgnn.safetensors'
    size = deployed.save(path)
    assert size == path.stat().st_size
    loaded = DeployedLightGNN.load(path)
    assert repr(loaded) == repr(deployed)
    original = dict(deployed.named_buffers())
    for name, buffer in loaded.named_buffers():
        assert buffer.dtype == original[name].dtype, name
        assert torch.equal(buffer, original[name]), name
    assert set(original) == {name for name, _ in loaded.named_buffers()}
    assert torch.equal(loaded.get_embedding(), embedding_of(trained))
    assert loaded.forward_flops() == trained.forward_flops()
    with pytest.raises(FileNotFoundError):
        deployed.save(tmp_path / 'missing' / 'x.safetensors')


def test_nbytes_by_hand(trained):
    deployed = deploy.convert(trained)
    edges = int(trained.edge_mask.sum())
    entries = int(trained.entry_mask.sum())
    assert (edges, entries) == (12, 40)
    buffers = {name: (b.dtype, tuple(b.shape))
               for name, b in deployed.named_buffers()}
    assert buffers == {
        'user_counts': (torch.int32, (U, )),
        'user_items': (torch.uint16, (edges, )),
        'edge_values': (torch.float32, (edges, )),
        'entry_bits': (torch.uint8, (U + I, 1)),
        'entry_values': (torch.float32, (entries, )),
        'alpha': (torch.float32, (L + 1, )),
    }
    assert deploy.nbytes(deployed) == (U * 4 + edges * (2 + 4) + (U + I) * 1 +
                                       entries * 4 + (L + 1) * 4)


def test_item_ids_int32_beyond_65536_items(tmp_path):
    assert item_dtype(1) == item_dtype(1 << 16) == torch.uint16
    assert item_dtype((1 << 16) + 1) == torch.int32
    num_items = 70_000
    pairs = torch.tensor([[0, 1, 2, 2, 0], [0, 69_999, 65_536, 5, 65_535]])
    torch.manual_seed(0)
    model = LightGNN(3, num_items, pairs, embedding_dim=2,
                     num_layers=1).eval()
    deployed = DeployedLightGNN.from_trained(model)
    assert deployed.user_items.dtype == torch.int32
    assert sorted(deployed.user_items.tolist()) == sorted(pairs[1].tolist())
    assert deploy.nbytes(deployed) == (3 * 4 + 5 * (4 + 4) +
                                       (3 + num_items) * 1 +
                                       (3 + num_items) * 2 * 4 + 2 * 4)
    assert torch.equal(deployed.get_embedding(), embedding_of(model))
    path = tmp_path / 'big.safetensors'
    deployed.save(path)
    loaded = DeployedLightGNN.load(path)
    assert loaded.user_items.dtype == torch.int32
    assert torch.equal(loaded.user_items, deployed.user_items)
    assert torch.equal(loaded.get_embedding(), deployed.get_embedding())
    assert 'int32' in repr(loaded)


def expect_corrupt(path, match):
    with pytest.raises(ValueError, match=re.escape(str(path))) as info:
        DeployedLightGNN.load(path)
    assert re.search(match, str(info.value)), str(info.value)


def test_corrupt_files(trained, tmp_path):
    junk = tmp_path / 'junk.safetensors'
    junk.write_bytes(torch.randint(256, (300, ), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(0))
                     .numpy().tobytes())
    expect_corrupt(junk, 'not a readable safetensors file')

    deployed = deploy.convert(trained)
    tensors = {name: b.contiguous() for name, b in deployed.named_buffers()}
    other = tmp_path / 'other.safetensors'
    safetensors.torch.save_file(tensors, other, metadata=dict(
        format='pyg_qgnn.gnaq', version='1'))
    expect_corrupt(other, 'not written by DeployedLightGNN.save')
    plain = tmp_path / 'plain.safetensors'
    safetensors.torch.save_file(tensors, plain)
    expect_corrupt(plain, 'not written by')
    no_config = tmp_path / 'no_config.safetensors'
    safetensors.torch.save_file(tensors, no_config, metadata=dict(
        format='pyg_qgnn.lightgnn', version='1'))
    expect_corrupt(no_config, 'corrupt config')

    with pytest.raises(FileNotFoundError):
        DeployedLightGNN.load(tmp_path / 'absent.safetensors')


@pytest.mark.parametrize('tamper,match', [
    (lambda d: d.user_counts.__setitem__(0, d.user_counts[0] + 1),
     'edge counts disagree'),
    (lambda d: setattr(d, 'edge_values', d.edge_values[:-1].clone()),
     'edge counts disagree'),
    (lambda d: d.user_items.__setitem__(0, I), 'item ids out of range'),
    (lambda d: setattr(d, 'entry_values', d.entry_values[:-1].clone()),
     'entry bitmap and values disagree'),
    (lambda d: d.entry_bits.__setitem__(0, 0xFF),
     'entry bitmap and values disagree'),
    (lambda d: setattr(d, 'edge_values', d.edge_values.double()),
     "'edge_values'.*wrong dtype"),
    (lambda d: setattr(d, 'entry_bits', d.entry_bits[:-1].clone()),
     "'entry_bits'.*wrong dtype/shape"),
], ids=['counts', 'values', 'item-range', 'entries', 'bitmap', 'dtype',
        'shape'])
def test_inconsistent_files(trained, tmp_path, tamper, match):
    deployed = deploy.convert(trained)
    tamper(deployed)
    path = tmp_path / 'tampered.safetensors'
    deployed.save(path)
    expect_corrupt(path, match)


def test_from_trained_needs_a_lightgnn(trained):
    with pytest.raises(TypeError, match="'twin' must be a LightGNN"):
        DeployedLightGNN.from_trained(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match='training mode'):
        deploy.convert(LightGNN(U, I, PAIRS, embedding_dim=D))


def test_forward_flops_and_repr(trained):
    deployed = deploy.convert(trained)
    assert deployed.forward_flops() == trained.forward_flops()
    # 12 kept edges, 24 directed entries, residual: by hand.
    assert deployed.forward_flops() == L * (2 * 24 * D + (U + I) * D) + \
        (L + 1) * 2 * (U + I) * D
    text = repr(deployed)
    assert 'edges=12 (item ids uint16, values float32)' in text
    assert 'entries=40 (bitmap + float32 values)' in text
    assert 'alpha=float32' in text and 'not stored' in text
