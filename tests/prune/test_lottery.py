import pytest
import torch
from torch_geometric.nn.models import GCN

from pyg_qgnn.prune import (
    effective_state,
    get_masks,
    iterative_magnitude_pruning,
    magnitude_prune,
    rewind,
    snapshot,
)
from pyg_qgnn.train import train_node_classifier
from tests.prune.helpers import two_community_graph


def gcn(seed=0):
    torch.manual_seed(seed)
    return GCN(8, 16, 2, 2)


def test_rewind_restores_the_kept_weights_and_keeps_masks():
    model = gcn()
    init = snapshot(model)
    train_node_classifier(model, two_community_graph(), epochs=5)
    magnitude_prune(model, 0.6)
    masks = get_masks(model)
    rewind(model, init)
    state = effective_state(model)
    for key, value in init.items():
        expected = value * masks[key] if key in masks else value
        assert torch.equal(state[key], expected)
    assert all(torch.equal(get_masks(model)[k], m) for k, m in masks.items())


def test_rewind_checks_before_writing():
    model = gcn()
    before = snapshot(model)
    bad = dict(snapshot(gcn(1)))
    bad['convs.0.lin.weight'] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="'convs.0.lin.weight' has shape"):
        rewind(model, bad)
    with pytest.raises(ValueError, match='missing'):
        rewind(model, {k: v for k, v in bad.items() if 'bias' not in k})
    assert all(torch.equal(before[k], v) for k, v in snapshot(model).items())


def test_rounds_rewind_prune_and_control():
    data = two_community_graph()
    seen = []

    def train(model):
        seen.append(({k: m.clone() for k, m in get_masks(model).items()},
                     snapshot(model)))
        return train_node_classifier(model, data, epochs=5).test_acc

    model = gcn()
    init = snapshot(model)
    rounds = iterative_magnitude_pruning(model, train, [0.5, 0.8],
                                         reinit=lambda: gcn(7))
    assert [r.sparsity for r in rounds] == pytest.approx([0.0, 0.5, 0.8],
                                                         abs=1e-2)
    assert rounds[0].random is None
    assert all(0.0 <= r.ticket <= 1.0 for r in rounds)
    assert all(0.0 <= r.random <= 1.0 for r in rounds[1:])
    assert len(seen) == 5  # dense, then ticket + control per round
    for i in (1, 3):  # ticket, then control under the same masks
        ticket_masks, ticket_start = seen[i]
        control_masks, control_start = seen[i + 1]
        assert ticket_masks and all(torch.equal(control_masks[k], m)
                                    for k, m in ticket_masks.items())
        # The ticket starts from the initial weights, the control not.
        key = 'convs.0.lin.weight'
        assert torch.equal(ticket_start[key], init[key])
        assert not torch.equal(control_start[key], init[key])


@pytest.mark.parametrize('sparsities', [[0.5, 0.5], [0.8, 0.5], [1.0], [0.0]])
def test_bad_schedule_fails_before_training(sparsities):
    def train(model):
        raise AssertionError('must not train')
    with pytest.raises(ValueError, match="'sparsities'"):
        iterative_magnitude_pruning(gcn(), train, sparsities)
