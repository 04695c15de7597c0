import math

import pytest
import torch
from torch import nn
from torch_geometric.nn.models import GCN, GIN, GraphSAGE

from pyg_qgnn.prune import (
    effective_state,
    get_masks,
    layer_sparsity,
    magnitude_prune,
    sparsity,
    threshold_prune,
)
from tests.prune.helpers import random_graph


def hand_made():
    r"""Layer a holds large weights, layer b small ones."""
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0, 3.0],
                                            [-4.0, 5.0, -6.0]]))
        model[2].weight.copy_(torch.tensor([[0.1, -0.4], [0.3, -0.2]]))
    return model


def reference_masks(model, amount, scope):
    r"""Plain torch: drop the k smallest |w| over all weights or per layer."""
    weights = [model[0].weight.detach(), model[2].weight.detach()]
    if scope == 'global':
        flat = torch.cat([w.abs().flatten() for w in weights])
        threshold = flat.sort().values[round(amount * flat.numel()) - 1]
        return [w.abs() > threshold for w in weights]
    masks = []
    for w in weights:
        k = round(amount * w.numel())
        threshold = w.abs().flatten().sort().values[k - 1]
        masks.append(w.abs() > threshold)
    return masks


@pytest.mark.parametrize('scope', ['global', 'layer'])
@pytest.mark.parametrize('amount', [0.3, 0.5, 0.8])
def test_thresholds_match_the_reference(scope, amount):
    model = magnitude_prune(hand_made(), amount, scope)
    masks = get_masks(model)
    expected = reference_masks(hand_made(), amount, scope)
    assert torch.equal(masks['0.weight'], expected[0])
    assert torch.equal(masks['2.weight'], expected[1])


def test_global_and_layerwise_differ_as_described():
    # One global threshold at 40% takes all of layer b's small weights;
    # layer-wise pruning takes 40% of each layer.
    global_ = layer_sparsity(magnitude_prune(hand_made(), 0.4, 'global'))
    layer = layer_sparsity(magnitude_prune(hand_made(), 0.4, 'layer'))
    assert global_ == {'0.weight': 0.0, '2.weight': 1.0}
    assert layer == {'0.weight': pytest.approx(2 / 6), '2.weight': 0.5}


@pytest.mark.parametrize('amount', [0.1, 0.33, 0.5, 0.77, 0.9])
def test_exact_ratios(amount):
    torch.manual_seed(0)
    model = GCN(20, 16, num_layers=3, out_channels=5)
    sizes = [20 * 16, 16 * 16, 16 * 5]
    magnitude_prune(model, amount)
    assert sparsity(model) * sum(sizes) == round(amount * sum(sizes))
    torch.manual_seed(0)
    model = magnitude_prune(GCN(20, 16, num_layers=3, out_channels=5),
                            amount, scope='layer')
    for (name, value), size in zip(layer_sparsity(model).items(), sizes):
        assert value * size == round(amount * size), name


def test_count_amount():
    model = magnitude_prune(hand_made(), 5)
    assert sparsity(model) == 5 / 10
    model = magnitude_prune(hand_made(), 3, scope='layer')  # per tensor
    assert layer_sparsity(model) == {'0.weight': 0.5, '2.weight': 0.75}


def test_ties_still_prune_exactly():
    model = nn.Sequential(nn.Linear(10, 10, bias=False))
    nn.init.constant_(model[0].weight, 0.5)
    magnitude_prune(model, 0.37)
    assert sparsity(model) == 0.37


def test_pruning_never_revives():
    model = magnitude_prune(hand_made(), 0.5)
    first = get_masks(model)
    magnitude_prune(model, 0.3)  # asks for less: unchanged
    assert all(torch.equal(get_masks(model)[k], m) for k, m in first.items())
    magnitude_prune(model, 0.8)
    assert sparsity(model) == 0.8
    for key, mask in get_masks(model).items():
        assert not (mask & ~first[key]).any()  # pruned stays pruned


@pytest.mark.parametrize('amount,error,match', [
    (1.0, ValueError, r"'amount' must be a fraction in \[0, 1\) \(got 1.0\)"),
    (-0.1, ValueError, r"'amount' must be a fraction"),
    (math.nan, ValueError, r"'amount' must be a fraction"),
    (11, ValueError, r"'amount' must be a count in 0..10"),
    (-1, ValueError, r"'amount' must be a count"),
    (True, TypeError, r"'amount' must be a fraction .* or an integer count"),
    ('0.5', TypeError, r"'amount'"),
])
def test_bad_amount_is_a_clear_error_and_changes_nothing(amount, error, match):
    model = hand_made()
    with pytest.raises(error, match=match):
        magnitude_prune(model, amount)
    assert not get_masks(model)


def test_layerwise_count_above_the_smallest_tensor_is_an_error():
    with pytest.raises(ValueError, match=r"'amount' .*'2.weight'"):
        magnitude_prune(hand_made(), 5, scope='layer')


def test_bad_scope():
    with pytest.raises(ValueError, match="'scope' must be one of"):
        magnitude_prune(hand_made(), 0.5, scope='row')


@pytest.mark.parametrize('make', [
    lambda: GCN(8, 16, num_layers=2, out_channels=3),
    lambda: GraphSAGE(8, 16, num_layers=2, out_channels=3),
    lambda: GIN(8, 16, num_layers=2, out_channels=3, norm='batch_norm'),
])
def test_pyg_models_prune_and_run(make):
    torch.manual_seed(0)
    model = make().eval()
    x, edge_index = random_graph()
    magnitude_prune(model, 0.5)
    assert sparsity(model) == pytest.approx(0.5, abs=2e-3)  # rounding
    out = model(x, edge_index)
    assert out.shape == (30, 3) and torch.isfinite(out).all()
    # The norms' statistics are untouched buffers.
    assert all('norm' not in key for key in get_masks(model))


def test_threshold_prune_matches_the_reference():
    model = threshold_prune(hand_made(), 0.3)
    state = effective_state(model)
    reference = hand_made()
    for key in ('0.weight', '2.weight'):
        weight = reference.get_parameter(key).detach()
        assert torch.equal(state[key], weight * (weight.abs() > 0.3))
    with pytest.raises(ValueError, match="'threshold' must be a finite"):
        threshold_prune(hand_made(), -1.0)
