import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch_geometric.nn.models import GCN, GIN

from pyg_qgnn import deploy
from pyg_qgnn.prune import (
    checkpoint_bytes,
    effective_state,
    get_masks,
    load_sparse,
    magnitude_prune,
    save_sparse,
)
from pyg_qgnn.prune import sparse_checkpoint
from pyg_qgnn.prune.sparse_checkpoint import int8_rounded, restored_state
from pyg_qgnn.train import train_node_classifier
from tests.prune.helpers import random_graph, two_community_graph


def gcn(seed=0, features=8, hidden=16):
    torch.manual_seed(seed)
    return GCN(features, hidden, num_layers=2, out_channels=3)


def gin(seed=0):
    torch.manual_seed(seed)
    model = GIN(8, 16, num_layers=2, out_channels=3, norm='batch_norm')
    model.train()
    model(*random_graph())  # running statistics and num_batches_tracked
    return model.eval()


def assert_same_state(model, expected_state, expected_masks):
    state = effective_state(model)
    assert set(state) == set(expected_state)
    for key, value in expected_state.items():
        assert state[key].dtype == value.dtype
        assert torch.equal(state[key], value), key
    masks = get_masks(model)
    assert set(masks) == set(expected_masks)
    for key, mask in expected_masks.items():
        assert torch.equal(masks[key], mask)


# Round trips #################################################################

@pytest.mark.parametrize('make,amount', [(gcn, 0.9), (gcn, 0.5), (gcn, 0.0),
                                         (gin, 0.7)])
def test_round_trip_is_exact(tmp_path, make, amount):
    model = magnitude_prune(make(), amount)
    path = tmp_path / 'model.safetensors'
    size = save_sparse(model, path)
    assert size == os.path.getsize(path) == checkpoint_bytes(model)
    fresh = load_sparse(path, make(seed=5))
    assert_same_state(fresh, effective_state(model), get_masks(model))
    x, edge_index = random_graph(seed=1)
    assert torch.equal(fresh(x, edge_index), model(x, edge_index))


def test_unpruned_model_round_trips_without_masks(tmp_path):
    model = gin()
    save_sparse(model, tmp_path / 'm.safetensors')
    fresh = load_sparse(str(tmp_path / 'm.safetensors'), gin(seed=3))
    assert_same_state(fresh, effective_state(model), {})


def test_loading_replaces_the_targets_masks(tmp_path):
    model = magnitude_prune(gcn(), 0.8)
    save_sparse(model, tmp_path / 'm.safetensors')
    target = magnitude_prune(gcn(seed=2), 0.3, scope='layer')
    load_sparse(tmp_path / 'm.safetensors', target)
    assert_same_state(target, effective_state(model), get_masks(model))


def test_loaded_masks_hold_during_fine_tuning(tmp_path):
    model = magnitude_prune(gcn(), 0.9)
    save_sparse(model, tmp_path / 'm.safetensors')
    fresh = load_sparse(tmp_path / 'm.safetensors', gcn(seed=1))
    train_node_classifier(fresh, two_community_graph(), epochs=5)
    for key, mask in get_masks(model).items():
        assert (effective_state(fresh)[key][~mask] == 0).all()


def test_int8_values_restore_the_rounded_tensors_exactly(tmp_path):
    model = magnitude_prune(gcn(), 0.6)
    save_sparse(model, tmp_path / 'm.safetensors', values='int8')
    fresh = load_sparse(tmp_path / 'm.safetensors', gcn(seed=1))
    assert_same_state(fresh, restored_state(model, 'int8'), get_masks(model))
    # Only the prunable weights are rounded; biases are kept as they are.
    assert torch.equal(fresh.convs[0].bias, model.convs[0].bias)


def test_int8_rounding_matches_the_reference():
    weight = torch.randn(5, 7)
    weight[2] = 0.0  # an all-zero channel
    scale = weight.abs().amax(dim=1, keepdim=True) / 127
    codes = torch.where(scale > 0, torch.round(weight / scale.clamp(min=1e-30)),
                        torch.zeros_like(weight)).clamp(-128, 127)
    reference = codes * scale
    assert torch.allclose(int8_rounded(weight), reference, rtol=0, atol=1e-7)
    assert (int8_rounded(weight)[weight == 0] == 0).all()


# Size ########################################################################

def test_sizes_at_ninety_percent(tmp_path):
    dense = gcn(features=1433, hidden=16)  # Cora-sized, random masks
    dense_bytes = deploy.save(dense, tmp_path / 'dense.safetensors')
    model = magnitude_prune(dense, 0.9)
    assert dense_bytes / checkpoint_bytes(model) >= 8.0
    assert dense_bytes / checkpoint_bytes(model, 'int8') >= 16.0


def test_both_position_codings_are_used_and_exact(tmp_path):
    # Half the weights kept: packed bits win; 3% kept: gaps win.
    kinds = {}
    for amount in (0.5, 0.97):
        model = magnitude_prune(gcn(features=200), amount)
        path = tmp_path / f'{amount}.safetensors'
        save_sparse(model, path)
        with safe_open(str(path), framework='pt') as f:
            info = json.loads(f.metadata()['tensors'])
        kinds[amount] = info['convs.0.lin.weight']['positions']
        fresh = load_sparse(path, gcn(seed=1, features=200))
        assert_same_state(fresh, effective_state(model), get_masks(model))
    assert kinds == {0.5: 'bits', 0.97: 'gaps'}


# Bad input ###################################################################

def assert_untouched(model, before_state, before_masks):
    assert_same_state(model, before_state, before_masks)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / 'model.safetensors'
    save_sparse(magnitude_prune(gcn(), 0.8), path)
    return path


def target():
    model = magnitude_prune(gcn(seed=4), 0.2)
    return model, effective_state(model), get_masks(model)


def test_other_shapes_are_rejected_before_loading(saved):
    model = magnitude_prune(gcn(seed=4, hidden=32), 0.2)
    state, masks = effective_state(model), get_masks(model)
    with pytest.raises(ValueError, match=r"'convs.0.bias' has shape \(16,\) "
                       r"in the checkpoint but \(32,\) in 'model'"):
        load_sparse(saved, model)
    assert_untouched(model, state, masks)


def test_other_architecture_is_rejected(saved):
    model = GCN(8, 16, num_layers=3, out_channels=3)
    with pytest.raises(ValueError, match="does not match 'model': missing "
                       r"\['convs.2.bias'"):
        load_sparse(saved, model)


def test_truncated_file(saved):
    model, state, masks = target()
    data = saved.read_bytes()
    saved.write_bytes(data[:len(data) - 100])
    with pytest.raises(ValueError, match='not a readable safetensors'):
        load_sparse(saved, model)
    assert_untouched(model, state, masks)


def test_corrupt_byte_is_caught_by_the_checksum(saved):
    model, state, masks = target()
    data = bytearray(saved.read_bytes())
    data[-20] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match='CRC-32'):
        load_sparse(saved, model)
    assert_untouched(model, state, masks)


def rewrite(path, change):
    r"""Rewrites the checkpoint at :obj:`path` with :obj:`change(tensors,
    info)` applied and a valid checksum, so the decoder's own checks run."""
    with safe_open(str(path), framework='pt') as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads(metadata['tensors'])
    change(tensors, info)
    metadata['tensors'] = json.dumps(info)
    metadata['crc32'] = sparse_checkpoint._checksum(tensors)
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize('change,match', [
    (lambda t, i: t.__setitem__('positions/convs.0.lin.weight',
                                torch.tensor([1, 2, 3], dtype=torch.uint8)),
     "positions of 'convs.0.lin.weight' are corrupt"),
    (lambda t, i: i['convs.0.lin.weight'].__setitem__('kept', 5),
     "'convs.0.lin.weight' are corrupt"),
    (lambda t, i: t.__setitem__('values/convs.0.lin.weight',
                                t['values/convs.0.lin.weight'][:-3].clone()),
     "values of 'convs.0.lin.weight' are corrupt"),
    (lambda t, i: i['convs.0.lin.weight'].__setitem__('positions', 'runs'),
     'unknown encoding'),
    (lambda t, i: t.pop('values/convs.1.lin.weight'),
     "entry of 'convs.1.lin.weight' is corrupt"),
])
def test_inconsistent_entries_are_clear_errors(saved, change, match):
    rewrite(saved, change)
    model, state, masks = target()
    with pytest.raises(ValueError, match=match):
        load_sparse(saved, model)
    assert_untouched(model, state, masks)


def test_foreign_and_missing_files(tmp_path):
    path = tmp_path / 'deploy.safetensors'
    deploy.save(gcn(), path)
    with pytest.raises(ValueError, match='not written by pyg_qgnn.prune'):
        load_sparse(path, gcn())
    with pytest.raises(FileNotFoundError):
        load_sparse(tmp_path / 'nope.safetensors', gcn())
    (tmp_path / 'garbage').write_bytes(b'\x00' * 7)
    with pytest.raises(ValueError, match='not a readable safetensors'):
        load_sparse(tmp_path / 'garbage', gcn())


def test_bad_save_arguments(tmp_path):
    with pytest.raises(ValueError, match="'values' must be one of"):
        save_sparse(gcn(), tmp_path / 'm.safetensors', values='int4')
    with pytest.raises(FileNotFoundError, match="'path'"):
        save_sparse(gcn(), tmp_path / 'missing' / 'm.safetensors')
    with pytest.raises(TypeError, match="'model' must be a torch.nn.Module"):
        checkpoint_bytes({'w': torch.zeros(2)})
