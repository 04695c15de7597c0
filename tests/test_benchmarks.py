r"""Smoke tests of the scripts in :file:`benchmarks/`: each runs on a tiny
graph and must write well-formed records. No timing is asserted: speed is
judged from the ratios the scripts report, within one run."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / 'benchmarks'
FIELDS = {'benchmark', 'case', 'metric', 'baseline', 'value', 'ratio', 'unit'}
TINY = ['--quick', '--min-run-time', '0.01', '--threads', '1']


def run_benchmark(script: str, json_path: Path, *flags: str) -> list:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), '--json',
         str(json_path), *TINY, *flags],
        cwd=BENCHMARKS.parent, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert '| case' in result.stdout  # the markdown table
    records = json.loads(json_path.read_text())
    assert isinstance(records, list)
    for record in records:
        assert set(record) == FIELDS
        assert record['baseline'] > 0 and record['value'] > 0
    return records


def test_quant_overhead(tmp_path):
    records = run_benchmark('quant_overhead.py', tmp_path / 'out.json',
                            '--nodes', '500', '--edges', '2000')
    # Observer cases against GCNConv, then the schemes against QAT INT4.
    assert [r['case'] for r in records] == [
        'gcn_int8_abs', 'gcn_int8_mom', 'gcn_int8_per', 'gcn_dq_int4',
        'gcn_a2q'
    ]
    for record in records:
        assert record['benchmark'] == 'quant_overhead'
        assert record['metric'] == 'train_step'
        assert record['unit'] == 's'
        # Times: above 1 means the quantized layer is faster.
        assert math.isclose(record['ratio'],
                            record['baseline'] / record['value'],
                            rel_tol=1e-9)


@pytest.mark.parametrize('schemes,cases', [
    (['dq'], ['gcn_int8_abs', 'gcn_dq_int4']),
    ([], ['gcn_int8_abs']),
])
def test_quant_overhead_scheme_selection(tmp_path, schemes, cases):
    records = run_benchmark('quant_overhead.py', tmp_path / 'out.json',
                            '--nodes', '200', '--edges', '800',
                            '--observers', 'abs', '--schemes', *schemes)
    assert [r['case'] for r in records] == cases


def test_layer_throughput(tmp_path):
    records = run_benchmark('layer_throughput.py', tmp_path / 'out.json',
                            '--layers', 'GCNConv', '--features', '16',
                            '--sizes', '300:1200', '200:800')
    assert [r['case'] for r in records] == [
        'GCNConv/300x1200/train', 'GCNConv/300x1200/inference',
        'GCNConv/200x800/train', 'GCNConv/200x800/inference'
    ]
    for record in records:
        assert record['benchmark'] == 'layer_throughput'
        assert record['metric'] == 'edges_per_s'
        assert record['unit'] == 'edges/s'
        # Throughputs: value / baseline, so above 1 still means faster.
        assert math.isclose(record['ratio'],
                            record['value'] / record['baseline'],
                            rel_tol=1e-9)


@pytest.mark.parametrize('script', ['quant_overhead.py',
                                    'layer_throughput.py'])
def test_help_explains_flags(script):
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), '--help'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for flag in ('--quick', '--json', '--threads', '--min-run-time'):
        assert flag in result.stdout


def test_bad_size_is_rejected():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / 'layer_throughput.py'), '--sizes',
         '300x1200'], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert 'NODES:EDGES' in result.stderr


@pytest.mark.parametrize('flags,argument', [
    (['--threads', '0'], '--threads'),
    (['--min-run-time', '-1'], '--min-run-time'),
    (['--nodes', '0'], '--nodes'),
    (['--json', '{file}/out.json'], '--json'),
])
def test_bad_arguments_are_one_line_errors(tmp_path, flags, argument):
    file = tmp_path / 'a_file'
    file.write_text('x')
    flags = [flag.format(file=file) for flag in flags]
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / 'quant_overhead.py'), *flags],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: argument ' +
                                                   argument)
    assert 'Traceback' not in result.stderr


def test_json_folder_is_created(tmp_path):
    out = tmp_path / 'new' / 'deeper' / 'out.json'
    run_benchmark('quant_overhead.py', out, '--nodes', '200', '--edges',
                  '800', '--observers', 'abs')
    assert out.is_file()


def test_help_explains_columns():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / 'quant_overhead.py'), '--help'],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for column in ('baseline', 'value', 'ratio', 'goal'):
        assert column in result.stdout
    assert ':class:' not in result.stdout and ':obj:' not in result.stdout


def test_binary_knn(tmp_path):
    records = run_benchmark('binary.py', tmp_path / 'out.json', '--clouds',
                            '2', '--points', '64', '--dims', '64', '20',
                            '--k', '5', '--metrics', 'knn')
    assert [r['case'] for r in records] == ['b2_n64_d64_k5', 'b2_n64_d20_k5']
    for record in records:
        assert record['benchmark'] == 'binary'
        assert record['metric'] == 'knn'
        assert record['unit'] == 's'
        # Times: above 1 means the Hamming kNN is faster.
        assert math.isclose(record['ratio'],
                            record['baseline'] / record['value'],
                            rel_tol=1e-9)


def test_binary_help_and_bad_argument():
    script = str(BENCHMARKS / 'binary.py')
    result = subprocess.run([sys.executable, script, '--help'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for flag in ('--quick', '--json', '--threads', '--clouds', '--dims'):
        assert flag in result.stdout
    result = subprocess.run([sys.executable, script, '--k', '0'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith('error: argument --k')


def test_prune(tmp_path):
    records = run_benchmark('prune.py', tmp_path / 'out.json', '--nodes',
                            '300', '--edges', '1200', '--features', '16',
                            '--hidden', '32', '--bytes-features', '200',
                            '--bytes-hidden', '16')
    assert [(r['case'], r['metric']) for r in records] == [
        ('gcn_s0.5_fp32', 'bytes'), ('gcn_s0.5_int8', 'bytes'),
        ('gcn_s0.9_fp32', 'bytes'), ('gcn_s0.9_int8', 'bytes'),
        ('gcn3_n300_c0.5', 'infer')]
    for record in records:
        assert record['benchmark'] == 'prune'
        assert record['unit'] == ('B' if record['metric'] == 'bytes' else 's')
        # Bytes and times: above 1 means the pruned form is smaller/faster.
        assert math.isclose(record['ratio'],
                            record['baseline'] / record['value'],
                            rel_tol=1e-9)
    sizes = {r['case']: r['value'] for r in records[:4]}
    assert sizes['gcn_s0.9_fp32'] < sizes['gcn_s0.5_fp32']
    assert sizes['gcn_s0.9_int8'] < sizes['gcn_s0.9_fp32']


def test_prune_bad_argument():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / 'prune.py'), '--removed', '1.5'],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith('error: argument --removed')


def test_recsys(tmp_path):
    records = run_benchmark('recsys.py', tmp_path / 'out.json', '--users',
                            '200', '--retrieve-users', '64')
    assert [r['case'] for r in records] == [
        'train_step/layer_coo', 'train_step/layer_csr',
        'train_step/model_csr', 'bytes/d64', 'bytes/d128', 'bytes/d256',
        'infer/load', 'infer/top20_64']
    for record in records:
        assert record['benchmark'] == 'recsys'
        # Times and bytes: above 1 means GNAQ is cheaper.
        assert math.isclose(record['ratio'],
                            record['baseline'] / record['value'],
                            rel_tol=1e-9)
    sizes = {r['case']: r for r in records if r['metric'] == 'bytes'}
    # d b bits + 2^b FP8 levels per node against 4 d bytes.
    assert sizes['bytes/d64']['ratio'] == 256 / 20
    assert sizes['bytes/d256']['ratio'] == 1024 / 68


def test_recsys_bad_argument():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / 'recsys.py'), '--users', '0'],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith('error: argument --users')


def test_binary_infer_and_bytes(tmp_path):
    records = run_benchmark('binary.py', tmp_path / 'out.json', '--clouds',
                            '2', '--points', '32', '--k', '4', '--metrics',
                            'infer', 'bytes', '--models', 'dgcnn')
    assert [(r['case'], r['metric']) for r in records] == [
        ('dgcnn_rf_b2_n32', 'infer'), ('dgcnn_rf', 'bytes'),
        ('dgcnn_bf1', 'bytes'), ('dgcnn_bf2', 'bytes')]
    for record in records:
        assert record['benchmark'] == 'binary'
        assert record['unit'] == ('s' if record['metric'] == 'infer'
                                  else 'bytes')
        # Times and bytes: above 1 means the deployed model is better.
        assert math.isclose(record['ratio'],
                            record['baseline'] / record['value'],
                            rel_tol=1e-9)
    # Sizes do not depend on the machine: 1-bit weights are far smaller.
    assert all(r['ratio'] > 10 for r in records if r['metric'] == 'bytes')


def test_layer_throughput_binary_edge_convs(tmp_path):
    records = run_benchmark('layer_throughput.py', tmp_path / 'out.json',
                            '--layers', 'BinEdgeConv', 'XorEdgeConv',
                            '--features', '8', '--sizes', '100:400')
    assert [r['case'] for r in records] == [
        'BinEdgeConv/100x400/train', 'BinEdgeConv/100x400/inference',
        'XorEdgeConv/100x400/train', 'XorEdgeConv/100x400/inference']


def test_layer_throughput_lgconv(tmp_path):
    records = run_benchmark('layer_throughput.py', tmp_path / 'out.json',
                            '--layers', 'LGConv', '--features', '16',
                            '--sizes', '300:1200')
    assert [r['case'] for r in records] == ['LGConv/300x1200/train',
                                            'LGConv/300x1200/inference']


def test_integer(tmp_path):
    from torch_geometric.typing import WITH_TORCH_SPARSE
    records = run_benchmark('integer.py', tmp_path / 'out.json', '--nodes',
                            '300', '--edges', '1200', '--features', '16',
                            '--hidden', '16')
    infer = ['gcn_int8_300_1200_16', 'gin_int8_300_1200_16',
             'sage_int8_300_1200_16', 'gcn_int4_300_1200_16']
    sizes = ['gcn_int8_16_16_16', 'gin_int8_16_16_16', 'sage_int8_16_16_16',
             'gcn_int4_16_16_16']
    cases = [r['case'] for r in records]
    # bfloat16 autocast baselines follow each INT8 case where the float
    # model runs under autocast (always with a torch_sparse adjacency).
    assert [c for c in cases if not c.endswith('_bf16')] == infer + sizes
    if WITH_TORCH_SPARSE:
        assert cases[:7] == [infer[0], infer[0] + '_bf16', infer[1],
                             infer[1] + '_bf16', infer[2], infer[2] + '_bf16',
                             infer[3]]
    for record in records:
        assert record['benchmark'] == 'integer'
        assert record['metric'] == ('bytes' if record['case'] in sizes
                                    else 'infer')
        assert record['unit'] == ('B' if record['metric'] == 'bytes' else 's')
        # Times and bytes: above 1 means the deployed model is better.
        assert math.isclose(record['ratio'],
                            record['baseline'] / record['value'],
                            rel_tol=1e-9)
    # Sizes do not depend on the machine: codes are smaller than floats,
    # 4-bit codes smaller than 8-bit ones, from the same float file.
    size = {r['case']: r for r in records if r['metric'] == 'bytes'}
    assert all(r['ratio'] > 1 for r in size.values())
    assert size['gcn_int4_16_16_16']['value'] < size['gcn_int8_16_16_16'][
        'value']
    assert size['gcn_int4_16_16_16']['baseline'] == size[
        'gcn_int8_16_16_16']['baseline']


def test_integer_help_and_bad_argument():
    script = str(BENCHMARKS / 'integer.py')
    result = subprocess.run([sys.executable, script, '--help'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for flag in ('--quick', '--json', '--nodes', '--hidden', '--models',
                 'cached=True', 'bfloat16'):
        assert flag in result.stdout
    result = subprocess.run([sys.executable, script, '--models', 'gat'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith('error: argument --models')


def test_layer_throughput_integer_twins(tmp_path):
    # Their inference cases convert the twins (deploy.convert), which
    # fails the run if one has no deployed form.
    records = run_benchmark('layer_throughput.py', tmp_path / 'out.json',
                            '--layers', 'GINConv', 'SAGEConv', 'GATConv',
                            '--features', '8', '--sizes', '100:400')
    assert [r['case'] for r in records] == [
        'GINConv/100x400/train', 'GINConv/100x400/inference',
        'SAGEConv/100x400/train', 'SAGEConv/100x400/inference',
        'GATConv/100x400/train', 'GATConv/100x400/inference']


def test_layer_throughput_bin_sage_conv(tmp_path):
    # The inference case times the deployed form (deploy.convert).
    records = run_benchmark('layer_throughput.py', tmp_path / 'out.json',
                            '--layers', 'BinSAGEConv', '--features', '8',
                            '--sizes', '100:400')
    assert [r['case'] for r in records] == ['BinSAGEConv/100x400/train',
                                            'BinSAGEConv/100x400/inference']


def test_binary_binsage(tmp_path):
    from torch_geometric.typing import WITH_TORCH_SPARSE
    records = run_benchmark('binary.py', tmp_path / 'out.json', '--metrics',
                            'infer', 'bytes', '--models', 'binsage',
                            '--nodes', '300', '--edges', '1200',
                            '--features', '16', '--hidden', '16')
    infer = ['binsage_300_1200_16'] + (['binsage_300_1200_16_bf16']
                                       if WITH_TORCH_SPARSE else [])
    assert [(r['case'], r['metric']) for r in records] == [
        *((case, 'infer') for case in infer), ('binsage', 'bytes')]
    for record in records:
        assert record['benchmark'] == 'binary'
        assert record['unit'] == ('bytes' if record['metric'] == 'bytes'
                                  else 's')
        # Times and bytes: above 1 means the deployed BinGraphSAGE is better.
        assert math.isclose(record['ratio'],
                            record['baseline'] / record['value'],
                            rel_tol=1e-9)
    # Sizes do not depend on the machine: 1-bit weights are smaller.
    assert records[-1]['ratio'] > 4


def test_binary_binsage_bytes_goal(tmp_path):
    # At the paper's width the file shrinks at least 20 times.
    records = run_benchmark('binary.py', tmp_path / 'out.json', '--metrics',
                            'bytes', '--models', 'binsage', '--nodes', '100',
                            '--edges', '400', '--features', '100')
    assert [r['case'] for r in records] == ['binsage']
    assert records[0]['ratio'] >= 20


def test_pruning(tmp_path):
    records = run_benchmark('pruning.py', tmp_path / 'out.json', '--users',
                            '200', '--dim', '16')
    assert [(r['case'], r['metric'], r['unit']) for r in records] == [
        ('infer/forward', 'infer', 's'),
        ('infer/rank_all_top20', 'infer', 's'),
        ('flops/forward', 'flops', 'FLOP'),
        ('flops/rank_all', 'flops', 'FLOP'),
        ('bytes/model', 'bytes', 'B'), ('bytes/file', 'bytes', 'B')]
    for record in records:
        assert record['benchmark'] == 'pruning'
        # Times, FLOPs and bytes: above 1 means the pruned student is
        # cheaper than the float teacher.
        assert math.isclose(record['ratio'],
                            record['baseline'] / record['value'],
                            rel_tol=1e-9)
    cost = {r['case']: r for r in records}
    # Sizes and FLOPs do not depend on the machine: 2 layers over 44% of
    # the edges, 33% of the entries (a bitmap and their values).
    assert cost['flops/forward']['ratio'] > 1.5
    assert 2 < cost['bytes/model']['ratio'] < 3
    # Scoring all pairs costs both the same and dominates.
    assert 1 < cost['flops/rank_all']['ratio'] < cost['flops/forward'][
        'ratio']
    # The files add their headers to the stored tensors.
    for side in ('baseline', 'value'):
        assert cost['bytes/file'][side] > cost['bytes/model'][side]


def test_pruning_cases_and_bad_arguments(tmp_path):
    records = run_benchmark('pruning.py', tmp_path / 'out.json', '--users',
                            '100', '--dim', '8', '--cases', 'bytes',
                            '--edge-keep', '0.5', '--student-layers', '1')
    assert [r['case'] for r in records] == ['bytes/model', 'bytes/file']
    script = str(BENCHMARKS / 'pruning.py')
    for flags, argument in ((['--edge-keep', '1.5'], '--edge-keep'),
                            (['--emb-keep', '0'], '--emb-keep'),
                            (['--cases', 'train'], '--cases'),
                            (['--users', '0'], '--users')):
        result = subprocess.run([sys.executable, script, *flags],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2
        assert result.stderr.startswith(f'error: argument {argument}')
        assert len(result.stderr.strip().splitlines()) == 1
