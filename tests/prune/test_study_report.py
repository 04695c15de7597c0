from pyg_qgnn.prune.study_report import (
    all_tables,
    l2_table,
    lottery_table,
    pruning_resource_table,
    pruning_table,
    quant_table,
    size_table,
    write_figures,
)

BASE = dict(task='node', dataset='Cora', source='real', model='gcn',
            metric='accuracy', runs=2, energy_source='unavailable: test')


def measured(**values):
    row = dict(BASE)
    for name, (mean, std) in values.items():
        row[f'{name}_mean'], row[f'{name}_std'] = mean, std
    return row


def prune_rows():
    rows = []
    for scope in ('global', 'layer'):
        for finetuned in (False, True):
            for sparsity, size in ((0.0, 1000), (0.9, 100)):
                rows.append(dict(measured(
                    score=(0.8 - sparsity / 10, 0.01), achieved=(sparsity, 0),
                    dense_bytes=(1000, 0), bytes=(size, 0),
                    bytes_int8=(size / 2, 0), time_s=(0.004, 0.001),
                    energy_j=(None, None), cpu_percent=(95.0, 2.0),
                    peak_rss_mb=(410.0, 1.0)), part='prune', scope=scope,
                    finetuned=finetuned, sparsity=sparsity,
                    layers={'convs.0.lin.weight': sparsity,
                            'convs.1.lin.weight': sparsity / 2}))
    return rows


def test_pruning_tables():
    rows = prune_rows()
    table = pruning_table(rows, 'global', True)
    assert table.splitlines()[0] == ('| task / dataset / model | criterion | '
                                     '0 | 0.9 |')
    assert '| node / Cora / gcn | test score (acc. or AUC) | 0.80 ± 0.01 | ' \
        '0.71 ± 0.01 |' in table
    assert '| node / Cora / gcn | size ratio (fp32) | 1.00x | 10.00x |' in \
        table
    assert '| node / Cora / gcn | inference (ms) | 4.000 ± 1.000 |' in table
    resources = pruning_resource_table(rows, 'layer', False)
    assert '| node / Cora / gcn | energy per inference (J) | n/a | n/a |' in \
        resources
    sizes = size_table(rows)
    assert 'fine-grained pruning' in sizes
    assert '| node / Cora / gcn | int8 values | 2.00x | 20.00x |' in sizes


def test_synthetic_rows_are_marked():
    rows = [dict(r, source='synthetic') for r in prune_rows()]
    assert 'node / Cora (SYNTHETIC) / gcn' in pruning_table(rows, 'global',
                                                           False)


def test_l2_quant_and_lottery_tables():
    l2 = [dict(measured(score=(0.8, 0.0), pruned_score=(0.79, 0.0),
                        achieved=(0.05, 0.0), train_time_s=(3.0, 0.1),
                        train_energy_j=(None, None),
                        train_cpu_percent=(90.0, 1.0),
                        train_peak_rss_mb=(400.0, 0.0)), part='l2', rate=r)
          for r in (1e6, 0.0, 1e-3)]
    table = l2_table(l2)
    assert table.splitlines()[0].endswith('| 0 | 0.001 | 1e+06 |')
    quant = [dict(measured(score=(0.8, 0.01), avg_bits=(bits, 0.0),
                           train_time_s=(1.0, 0.0), time_s=(0.01, 0.0),
                           dense_bytes=(1000, 0), bytes=(1000 * bits / 32, 0),
                           energy_j=(None, None), cpu_percent=(50.0, 0.0),
                           peak_rss_mb=(1.0, 0.0)),
                  part='quant', method=method, bits=bits)
             for method, bits in (('FP32', 32), ('QAT', 8), ('DQ', 4))]
    table = quant_table(quant)
    assert table.splitlines()[0].endswith('| FP32 | QAT-INT8 | DQ-INT4 |')
    assert '| size ratio (deploy.save) | 1.00x | 4.00x | 8.00x |' in table
    assert 'column' not in quant[0]  # the caller's rows are left alone
    lottery = [dict(measured(ticket=(0.8, 0.01), random=(None, None)),
                    part='lottery', sparsity=0.0),
               dict(measured(ticket=(0.7, 0.01), random=(0.75, 0.02)),
                    part='lottery', sparsity=0.9)]
    table = lottery_table(lottery)
    assert '| ticket - random (points) |  | -5.00 |' in table


def test_all_tables_and_figures(tmp_path):
    rows = prune_rows()
    tables = all_tables(rows)
    for title in ('Table 5', 'Table 9', 'Table 10', 'Table 11', 'Table 12',
                  'Table 13', 'Table 16'):
        assert f'### {title}' in tables
    assert 'Table 17' not in tables
    paths = write_figures(rows, str(tmp_path / 'new'))
    assert sorted(p.rsplit('/', 1)[1] for p in paths) == [
        'figure2_layer_sparsity.png', 'figure3_score.png',
        'figure4_peak_rss_mb.png', 'figure5_energy_j.png',
        'figure6_cpu_percent.png']
    assert all((tmp_path / 'new' / p.rsplit('/', 1)[1]).stat().st_size > 0
               for p in paths)
