import pytest
import torch
from torch_geometric.nn import global_mean_pool

from pyg_qgnn.datasets import LoadedDataset, LoadedGraph, contextual_sbm, \
    synthetic_graph_classes
from pyg_qgnn.prune import study
from pyg_qgnn.prune.study import (
    GCNGraphClassifier,
    GraphTask,
    LinkTask,
    NodeTask,
    aggregate,
    l2_sweep,
    load_task,
    lottery_test,
    pruning_sweep,
    quant_comparison,
)
from pyg_qgnn.prune.study_report import all_tables, write_figures
from pyg_qgnn.train import Method


def graph():
    data = contextual_sbm(200, 2, 32, train_per_class=10, num_val=50,
                          num_test=100)
    return LoadedGraph(data, 2, 'synthetic', 'synthetic split', True, 'Cora')


@pytest.fixture(scope='module')
def node_task():
    return NodeTask(graph())


def test_pruning_sweep_records_every_setting(node_task):
    calls = []
    records = pruning_sweep(node_task, 'gcn', 1, [0.0, 0.9], epochs=3,
                            finetune_epochs=1, scopes=('global', 'layer'),
                            repeats=1, progress=lambda: calls.append(1))
    assert len(records) == 2 * 2 * 2 and len(calls) == 4
    for r in records:
        assert (r['part'], r['task'], r['dataset'], r['source']) == (
            'prune', 'node', 'Cora', 'synthetic')
        assert r['achieved'] == pytest.approx(r['sparsity'], abs=1e-3)
        assert 0.0 <= r['score'] <= 1.0 and r['time_s'] > 0
        assert r['energy_j'] is None or r['energy_j'] >= 0
        assert set(r['layers']) == {'convs.0.lin.weight', 'convs.1.lin.weight'}
    dense = [r for r in records if r['sparsity'] == 0.0]
    sparse = [r for r in records if r['sparsity'] == 0.9]
    assert all(s['bytes'] < d['bytes'] for s, d in zip(sparse, dense))
    assert all(d['bytes_int8'] < d['bytes'] for d in dense)
    rows = aggregate(records)
    assert len(rows) == 8 and all(r['runs'] == 1 for r in rows)
    assert {'score_mean', 'score_std', 'bytes_mean', 'energy_j_mean'} <= \
        set(rows[0])


def test_other_parts_and_the_report(node_task, tmp_path):
    records = l2_sweep(node_task, 'gcn', 1, [0.0, 1.0], 1e-3, epochs=3,
                       repeats=1)
    assert [r['rate'] for r in records] == [0.0, 1.0]
    assert all('train_time_s' in r and 'pruned_score' in r for r in records)
    records += lottery_test(node_task, 'gcn', 2, [0.5], epochs=2)
    lottery = [r for r in records if r['part'] == 'lottery']
    assert [(r['run'], r['sparsity']) for r in lottery] == [
        (0, 0.0), (0, 0.5), (1, 0.0), (1, 0.5)]
    assert lottery[0]['random'] is None and lottery[1]['random'] is not None
    records += quant_comparison(node_task, 'gcn', 1,
                                [Method('fp32'), Method('qat', 8)], epochs=2,
                                finetune_epochs=1, repeats=1)
    quant = [r for r in records if r['part'] == 'quant']
    assert [r['method'] for r in quant] == ['FP32', 'QAT']
    assert (quant[0]['avg_bits'], quant[1]['avg_bits']) == (32.0, 8.0)
    records += pruning_sweep(node_task, 'gcn', 1, [0.0, 0.5], 2, 1,
                             repeats=1)
    rows = aggregate(records)
    tables = all_tables(rows)
    for title in ('Table 5', 'Table 9', 'Table 16', 'Table 17', 'Tables 7-8',
                  'Lottery'):
        assert title in tables
    assert '| node / Cora (SYNTHETIC) / gcn | test score |' in tables
    paths = write_figures(rows, str(tmp_path))
    names = sorted(p.split('/')[-1] for p in paths)
    assert names[:2] == ['figure10_l2_train_cpu_percent.png',
                         'figure2_layer_sparsity.png']
    assert len(names) == 10 and all((tmp_path / n).stat().st_size > 0
                                    for n in names)


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


@pytest.mark.skipif(not study.has_spline_conv(),
                    reason='torch-spline-conv is not installed')
def test_spline_net_uses_target_in_degree():
    from torch_geometric.data import Data
    from torch_geometric.transforms import TargetIndegree
    torch.manual_seed(0)
    model = study.SplineNet(4, 3).eval()
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
