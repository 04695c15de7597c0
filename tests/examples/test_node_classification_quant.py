import json

import pytest

from tests.conftest import SHARED_DATA, has_shared
from tests.examples.conftest import (
    assert_one_line_error,
    assert_parse_error,
    load_example,
    run_example,
)

SCRIPT = 'node_classification_quant.py'


@pytest.mark.skipif(not has_shared('Cora'), reason='shared Cora data absent')
def test_tiny_run_on_cora_writes_rows_and_plot(tmp_path):
    out, plot = tmp_path / 'rows.json', tmp_path / 'acc.png'
    result = run_example(SCRIPT, '--root', str(SHARED_DATA), '--model', 'gcn',
                         'sage', '--bits', '4', '--seeds', '1', '--epochs',
                         '3', '--finetune-epochs', '2', '--json', str(out),
                         '--plot', str(plot), '--no-progress',
                         '--min-run-time', '0.02')
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [(r['model'], r['method']) for r in rows] == [
        (m, meth) for m in ('gcn', 'sage')
        for meth in ('FP32', 'QAT', 'DQ', 'A²Q')]
    assert all(r['dataset'] == 'Cora' and r['source'] == 'real'
               for r in rows)
    fp32, qat = rows[0], rows[1]
    assert qat['bytes'] < fp32['bytes'] / 4  # INT4 packed weights
    assert plot.stat().st_size > 0
    assert '| QAT | 4 |' in result.stdout
    # Every quantized model deployed: same predictions, same accuracy.
    for r in rows:
        if r['method'] == 'FP32':
            assert r['not_deployed'] and r['deployed_acc_mean'] is None
            continue
        assert r['not_deployed'] is None and r['deployed_runs'] == 1
        assert r['same_predictions'] == 1.0
        assert r['deployed_acc_mean'] == r['acc_mean']
        assert r['deployed_bytes'] < r['float_bytes']
        assert r['deployed_time_s'] > 0 and r['float_time_s'] > 0
    assert '| deployed accuracy | same predictions |' in result.stdout
    assert 'WARNING' not in result.stdout


def test_help_says_what_it_measures():
    result = run_example(SCRIPT, '--help')
    assert result.returncode == 0
    assert 'Columns:' in result.stdout and ':class:' not in result.stdout
    assert 'deployed model' in result.stdout and '--min-run-time' in \
        result.stdout


@pytest.mark.parametrize('args,argument', [
    (['--model', 'mlp'], '--model'),
    (['--method', 'pact'], '--method'),
    (['--bits', '0'], '--bits'),
    (['--seeds', '0'], '--seeds'),
    (['--a2q-target', '0.5'], '--a2q-target'),
    (['--root', '/nonexistent'], '--root'),
    (['--min-run-time', '0'], '--min-run-time'),
])
def test_bad_arguments(args, argument, capsys):
    parser = load_example(SCRIPT).build_parser()
    assert_parse_error(parser, args, argument, capsys)


def test_bad_argument_from_the_command_line():
    assert_one_line_error(run_example(SCRIPT, '--bits', '9'), '--bits')
