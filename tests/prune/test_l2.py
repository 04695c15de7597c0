import math

import pytest
import torch
from torch_geometric.nn.models import GCN, GIN

from pyg_qgnn.prune import L2Penalty, l2_penalty, magnitude_prune, sparsity, \
    threshold_prune
from tests.prune.helpers import two_community_graph


def test_penalty_and_gradient_match_the_reference():
    torch.manual_seed(0)
    model = GIN(8, 16, num_layers=2, out_channels=3, norm='batch_norm')
    penalty = l2_penalty(model, 0.3)
    weights = [lin.weight for conv in model.convs for lin in conv.nn.lins]
    reference = 0.15 * sum((w ** 2).sum() for w in weights)
    assert torch.allclose(penalty, reference)
    penalty.backward()
    for w in weights:  # d/dW of rate/2 ||W||^2 is rate W
        assert torch.allclose(w.grad, 0.3 * w.detach())
    norm = model.convs[0].nn.norms[0].module
    assert norm.weight.grad is None and model.convs[0].nn.lins[0].bias.grad \
        is None


def test_pruned_weights_add_nothing():
    torch.manual_seed(0)
    model = magnitude_prune(GCN(8, 16, 2, 3), 0.5)
    masked = [conv.lin.weight for conv in model.convs]
    reference = 0.5 * sum((w ** 2).sum() for w in masked)
    assert torch.allclose(l2_penalty(model, 1.0), reference)


@pytest.mark.parametrize('rate', [-1.0, math.nan, math.inf, True, '1'])
def test_bad_rate(rate):
    with pytest.raises(ValueError, match="'rate' must be a finite number"):
        L2Penalty(rate)
    with pytest.raises(ValueError, match="'rate'"):
        l2_penalty(GCN(4, 4, 2, 2), rate)


def test_zero_rate_and_repr():
    assert float(L2Penalty(0.0)(GCN(4, 4, 2, 2))) == 0.0
    assert repr(L2Penalty(1e-3)) == 'L2Penalty(rate=0.001)'


def test_strong_penalty_then_threshold_prunes_more():
    data = two_community_graph()
    found = {}
    for rate in (0.0, 1.0):
        torch.manual_seed(0)
        model = GCN(8, 16, 2, 2)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
        penalty = L2Penalty(rate)
        for _ in range(60):
            optimizer.zero_grad()
            out = model(data.x, data.edge_index)[data.train_mask]
            loss = torch.nn.functional.cross_entropy(
                out, data.y[data.train_mask]) + penalty(model)
            loss.backward()
            optimizer.step()
        found[rate] = sparsity(threshold_prune(model, 0.05))
    assert found[1.0] > found[0.0] + 0.3
