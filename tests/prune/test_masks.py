import copy

import pytest
import torch
from torch import nn
from torch_geometric.nn.models import GCN, GIN

from pyg_qgnn import QAT, quantize_model
from pyg_qgnn.prune import (
    WeightMask,
    apply_masks,
    effective_state,
    get_masks,
    layer_sparsity,
    magnitude_prune,
    make_permanent,
    prunable_parameters,
    remove_masks,
    sparsity,
)
from pyg_qgnn.train import train_node_classifier
from tests.prune.helpers import random_graph, two_community_graph


def gcn(seed=0, hidden=16):
    torch.manual_seed(seed)
    return GCN(8, hidden, num_layers=2, out_channels=3)


def test_weight_mask_is_the_elementwise_product():
    mask = torch.tensor([[True, False], [False, True]])
    weight = torch.randn(2, 2, requires_grad=True)
    out = WeightMask(mask)(weight)
    assert torch.equal(out, weight * mask.float())
    out.sum().backward()
    assert torch.equal(weight.grad, mask.float())  # pruned: zero gradient
    assert 'kept=2/4' in repr(WeightMask(mask))


def test_default_selection_is_weights_of_two_or_more_dims():
    model = GIN(8, 16, num_layers=2, out_channels=3, norm='batch_norm')
    names = [name for name, _, _ in prunable_parameters(model)]
    assert names == ['convs.0.nn.lins.0.weight', 'convs.0.nn.lins.1.weight',
                     'convs.1.nn.lins.0.weight', 'convs.1.nn.lins.1.weight']
    # Norms (their weights and running statistics) and biases never.
    assert not any('norm' in name or 'bias' in name for name in names)


def test_selection_by_name_and_predicate():
    model = gcn()
    chosen = prunable_parameters(model, ['convs.1.lin.weight'])
    assert [c[0] for c in chosen] == ['convs.1.lin.weight']
    biases = prunable_parameters(model, lambda m, name, t: name == 'bias')
    assert [c[0] for c in biases] == ['convs.0.bias', 'convs.1.bias']
    with pytest.raises(ValueError, match=r"'include' names .*convs.9"):
        prunable_parameters(model, ['convs.9.lin.weight'])


@pytest.mark.parametrize('model', [
    nn.Sequential(nn.BatchNorm1d(4), nn.LayerNorm(4)),
    nn.Sequential(nn.ReLU()),
])
def test_model_with_nothing_prunable_is_an_error(model):
    with pytest.raises(ValueError, match="'model' .* has nothing to prune"):
        magnitude_prune(model, 0.5)
    assert not get_masks(model)


def test_lazy_layer_is_an_error():
    model = GCN(-1, 8, num_layers=2, out_channels=2)
    with pytest.raises(ValueError, match='not initialized yet'):
        magnitude_prune(model, 0.5)


def test_masks_survive_state_dict_round_trip_and_deepcopy():
    model = magnitude_prune(gcn(), 0.7)
    state = copy.deepcopy(model.state_dict())
    other = magnitude_prune(gcn(seed=1), 0.3)
    other.load_state_dict(state)  # strict: PyG's Linear adds no stray key
    for key, mask in get_masks(model).items():
        assert torch.equal(get_masks(other)[key], mask)
    clone = copy.deepcopy(model)
    x, edge_index = random_graph()
    assert torch.equal(clone(x, edge_index), model(x, edge_index))
    assert torch.equal(other(x, edge_index), model(x, edge_index))


def test_masks_hold_during_fine_tuning():
    data = two_community_graph()
    model = magnitude_prune(gcn(), 0.8)
    masks = get_masks(model)
    before = {k: v.clone() for k, v in effective_state(model).items()}
    train_node_classifier(model, data, epochs=5, weight_decay=5e-4)
    after = effective_state(model)
    for key, mask in masks.items():
        assert torch.equal(get_masks(model)[key], mask)
        assert (after[key][~mask] == 0).all()
        assert not torch.equal(after[key][mask], before[key][mask])


def test_forward_equals_a_model_with_masked_weights():
    model = magnitude_prune(gcn(), 0.6)
    reference = gcn()
    with torch.no_grad():
        for key, value in effective_state(model).items():
            reference.get_parameter(key).copy_(value)
    x, edge_index = random_graph()
    assert torch.equal(model(x, edge_index), reference(x, edge_index))


def test_make_permanent_restores_the_plain_layer():
    model = magnitude_prune(gcn(), 0.5)
    expected = effective_state(model)
    make_permanent(model)
    assert type(model.convs[0].lin).__name__ == 'Linear'
    assert set(model.state_dict()) == set(expected)
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key])
    assert sparsity(model) == pytest.approx(0.5, abs=1e-3)
    quantize_model(model, QAT(bits=8))  # exact-class registry sees it again


def test_permanent_copy_leaves_the_original_working():
    # torch's remove_parametrizations deletes the property from the class
    # that deep copies share; remove_masks must not.
    model = magnitude_prune(gcn(), 0.5)
    copy_ = make_permanent(copy.deepcopy(model))
    x, edge_index = random_graph()
    assert torch.equal(model(x, edge_index), copy_(x, edge_index))
    assert get_masks(model)


def test_remove_masks_can_bring_the_weights_back():
    model = gcn()
    original = model.convs[0].lin.weight.detach().clone()
    magnitude_prune(model, 0.9)
    remove_masks(model, permanent=False)
    assert torch.equal(model.convs[0].lin.weight, original)
    assert not get_masks(model)


def test_apply_masks_checks_before_setting():
    source = magnitude_prune(gcn(), 0.5)
    target = gcn(hidden=8)
    with pytest.raises(ValueError, match="shape"):
        apply_masks(target, get_masks(source))
    assert not get_masks(target)  # nothing half-set
    with pytest.raises(ValueError, match="'nope.weight'"):
        apply_masks(gcn(), {'nope.weight': torch.ones(2, 2)})
    twin = apply_masks(gcn(seed=3), get_masks(source))
    for key, mask in get_masks(source).items():
        assert torch.equal(get_masks(twin)[key], mask)


def test_layer_sparsity_reports_zero_share_per_layer():
    model = gcn()
    with torch.no_grad():
        model.convs[0].lin.weight[:4] = 0  # 4 of 16 rows
    sparsities = layer_sparsity(model)
    assert sparsities == {'convs.0.lin.weight': 0.25, 'convs.1.lin.weight': 0.0}
    total = 16 * 8 + 3 * 16
    assert sparsity(model) == pytest.approx(4 * 8 / total)
