import pytest

from pyg_qgnn.prune.study import (
    aggregate,
    l2_sweep,
    lottery_test,
    pruning_sweep,
    quant_comparison,
)
from pyg_qgnn.prune.tasks import NodeTask
from pyg_qgnn.prune.study_report import all_tables, write_figures
from pyg_qgnn.train import Method
from tests.prune.helpers import graph


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
