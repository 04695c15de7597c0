import pytest
import torch
from torch_geometric.nn import global_mean_pool

from pyg_qgnn.datasets import LoadedDataset, synthetic_graph_classes
from pyg_qgnn.prune import tasks
from pyg_qgnn.prune.study import pruning_sweep
from pyg_qgnn.prune.tasks import (
    GCNGraphClassifier,
    GraphTask,
    LinkTask,
    NodeTask,
    load_task,
)
from tests.prune.helpers import graph


def test_link_task_trains_and_scores():
    task = LinkTask(graph())
    torch.manual_seed(0)
    model = task.make_model('gae')
    auc = task.train(model, 0, 3, 0.01)
    assert 0.0 <= auc <= 1.0
    assert task.evaluate(model, 0) == pytest.approx(auc)
    with torch.no_grad():
        assert task.inference(model, 0)().numel() == \
            task.split[2].pos_edge_label_index.size(1) * 2


def test_graph_task_runs_are_folds():
    loaded = LoadedDataset(synthetic_graph_classes(30), 'synthetic', True)
    task = GraphTask(loaded, 'PROTEINS', folds=3, batch_size=16)
    assert task.runs(3) == [0, 1, 2]
    with pytest.raises(ValueError, match="'runs' must be at most 3"):
        task.runs(4)
    records = pruning_sweep(task, 'gcn3', 1, [0.5], 1, 1, scopes=('global', ),
                            repeats=1)
    assert len(records) == 2 and records[0]['task'] == 'graph'


def test_gcn_graph_classifier_pools_by_mean():
    torch.manual_seed(0)
    model = GCNGraphClassifier(4, 3, hidden_channels=8).eval()
    x = torch.randn(6, 4)
    edge_index = torch.tensor([[0, 1, 3, 4], [1, 2, 4, 5]])
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    expected = model.head(global_mean_pool(model.gnn(x, edge_index), batch))
    assert torch.equal(model(x, edge_index, batch), expected)
    assert model(x, edge_index, batch).shape == (2, 3)


@pytest.mark.skipif(not tasks.has_spline_conv(),
                    reason='torch-spline-conv is not installed')
def test_spline_net_uses_target_in_degree():
    from torch_geometric.data import Data
    from torch_geometric.transforms import TargetIndegree
    torch.manual_seed(0)
    model = tasks.SplineNet(4, 3).eval()
    x = torch.randn(5, 4)
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 2, 2, 4]])
    pseudo = TargetIndegree()(Data(edge_index=edge_index, num_nodes=5)) \
        .edge_attr
    h = torch.nn.functional.elu(model.conv1(x, edge_index, pseudo))
    assert torch.allclose(model(x, edge_index),
                          model.conv2(h, edge_index, pseudo))


def test_load_task_rejects_unknown_names():
    with pytest.raises(ValueError, match="'task' must be one of"):
        load_task('edge', 'Cora')
    with pytest.raises(ValueError, match="'dataset' must be one of"):
        load_task('graph', 'Cora')
    with pytest.raises(ValueError, match="'model' must be one of"):
        NodeTask(graph()).make_model('gat')
