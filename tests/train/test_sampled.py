import pytest
import torch
import torch_geometric.typing
from torch_geometric.data import Data
from torch_geometric.nn.models import GraphSAGE

from pyg_qgnn.datasets.ogb_synthetic import planted_partition, ranked_split
from pyg_qgnn.distill import distillation_loss
from pyg_qgnn.train.sampled import (
    check_fanouts,
    layerwise_inference,
    neighbor_loader,
    sampled_accuracy,
    score_splits,
    train_sampled,
)
from pyg_qgnn.train.distributed import DistributedContext

pytestmark = pytest.mark.skipif(
    not (torch_geometric.typing.WITH_PYG_LIB
         or torch_geometric.typing.WITH_TORCH_SPARSE),
    reason='NeighborLoader needs pyg-lib or torch_sparse')


def planted_graph(num_nodes=300, num_classes=3, seed=0):
    x, y, edges, popularity = planted_partition(
        num_nodes, num_classes, 8, avg_degree=8.0, homophily=0.8,
        feature_signal=1.5, seed=seed)
    train, val, test = ranked_split(popularity, (0.3, 0.2))
    data = Data(x=x, edge_index=torch.cat([edges, edges.flip(0)], dim=1),
                y=y, num_nodes=num_nodes)
    return data, dict(train=train, valid=val, test=test)


class ToyEvaluator:
    r"""ogb's Evaluator interface: accuracy of (N, 1) arrays."""
    def eval(self, batch):
        return {'acc': float((batch['y_true'] == batch['y_pred']).float()
                             .mean())}


def test_learns_and_restores_the_selected_epoch():
    data, split = planted_graph()
    torch.manual_seed(0)
    model = GraphSAGE(8, 16, 2, 3)
    events = []
    result = train_sampled(model, data, split['train'], split['valid'],
                           [5, 5], epochs=8, batch_size=32, lr=0.01,
                           callback=events.append)
    epochs = [e for e in events if e['phase'] == 'epoch']
    steps = [e for e in events if e['phase'] == 'step']
    assert [e['epoch'] for e in epochs] == list(range(1, 9))
    assert len(steps) == 8 * 3 and steps[0]['steps'] == 3  # ceil(90 / 32)
    assert result.val_acc == max(h['val_acc'] for h in result.history)
    assert result.history[result.epoch - 1]['val_acc'] == result.val_acc
    assert result.history[-1]['loss'] < result.history[0]['loss']
    # The restored model: full-graph inference scores it well.
    logits = layerwise_inference(model, data, batch_size=64)
    acc = score_splits(logits, data.y, split, ToyEvaluator())
    assert acc['valid'] > 0.8 and acc['test'] > 0.6


def test_layerwise_inference_equals_the_full_graph_forward():
    data, _ = planted_graph(120)
    torch.manual_seed(1)
    model = GraphSAGE(8, 16, 3, 3, dropout=0.5).train()
    logits = layerwise_inference(model, data, batch_size=25)
    assert model.training  # restored
    model.eval()
    expected = model(data.x, data.edge_index)
    assert torch.allclose(logits, expected, atol=1e-5)


def test_layerwise_inference_needs_a_basic_gnn():
    data, _ = planted_graph(50)
    with pytest.raises(TypeError, match="'model'.*BasicGNN"):
        layerwise_inference(torch.nn.Linear(8, 3), data)


def test_distillation_uses_the_teacher_logits():
    data, split = planted_graph()
    torch.manual_seed(1)
    teacher = GraphSAGE(8, 16, 2, 3)
    teacher_logits = layerwise_inference(teacher, data)
    seen = []

    class Spy(GraphSAGE):
        def forward(self, x, edge_index):
            out = super().forward(x, edge_index)
            seen.append(out)
            return out

    torch.manual_seed(0)
    student = Spy(8, 16, 2, 3, dropout=0.0)
    events = []
    train_sampled(student, data, split['train'], split['valid'], [-1, -1],
                  epochs=1, batch_size=1000, teacher_logits=teacher_logits,
                  alpha=0.5, temperature=2.0, callback=events.append)
    losses = [e['loss'] for e in events if e['phase'] == 'step']
    # One step over every training node, in the sampler's shuffled order.
    seeds = _seed_nodes(split, epoch=1)
    out = seen[0][:seeds.numel()]
    expected = distillation_loss(out, teacher_logits[seeds], data.y[seeds],
                                 temperature=2.0, alpha=0.5).detach()
    assert len(losses) == 1
    assert losses[0] == pytest.approx(float(expected), rel=1e-5)
    cross_entropy_only = torch.nn.functional.cross_entropy(
        out, data.y[seeds]).detach()
    assert float(expected) != pytest.approx(float(cross_entropy_only))


def _seed_nodes(split, epoch):
    r"""The training nodes of the first step, in the loader's order."""
    sampler = torch.utils.data.DistributedSampler(
        range(split['train'].numel()), num_replicas=1, rank=0, seed=0)
    sampler.set_epoch(epoch)
    return split['train'][torch.as_tensor(list(sampler))]


def test_sampled_accuracy_counts_seed_nodes():
    data, split = planted_graph(60)
    model = GraphSAGE(8, 8, 1, 3).eval()
    loader = neighbor_loader(data, [-1], 7, split['valid'])
    pred = model(data.x, data.edge_index).argmax(-1)
    expected = float((pred[split['valid']] == data.y[split['valid']])
                     .float().mean())
    assert sampled_accuracy(model, loader, DistributedContext()) == \
        pytest.approx(expected)
    assert sampled_accuracy(model, None, DistributedContext()) == 0.0


def test_score_splits_with_ogb_evaluator():
    from ogb.nodeproppred import Evaluator
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    y = torch.tensor([0, 0, 0, 1])
    acc = score_splits(logits, y, dict(a=torch.tensor([0, 1]),
                                       b=torch.tensor([2, 3])),
                       Evaluator('ogbn-products'))
    assert acc == dict(a=0.5, b=1.0)


def test_fanouts_must_match_the_layers():
    assert check_fanouts([15, 10, -1], 3) == [15, 10, -1]
    with pytest.raises(ValueError, match=r"'fanouts'.*2 given.*3 layers"):
        check_fanouts([15, 10], 3)
    with pytest.raises(ValueError, match="'fanouts' must be positive"):
        check_fanouts([15, 0], 2)


@pytest.mark.parametrize('kwargs,match', [
    (dict(epochs=0), "'epochs'"),
    (dict(batch_size=0), "'batch_size'"),
    (dict(alpha=2.0), "'alpha'"),
    (dict(temperature=0.0), "'temperature'"),
    (dict(teacher_logits=torch.zeros(5, 3)), "'teacher_logits'"),
])
def test_bad_arguments_are_named(kwargs, match):
    data, split = planted_graph(60)
    args = dict(epochs=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train_sampled(GraphSAGE(8, 8, 1, 3), data, split['train'],
                      split['valid'], [3], **args)
