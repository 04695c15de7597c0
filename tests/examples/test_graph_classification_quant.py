import json

import pytest

from tests.conftest import SHARED_DATA, has_shared
from tests.examples.conftest import (
    assert_one_line_error,
    assert_parse_error,
    load_example,
    run_example,
)

SCRIPT = 'graph_classification_quant.py'
TINY = ['--folds', '3', '--epochs', '2', '--finetune-epochs', '1',
        '--bits', '4', '--layers', '2', '--hidden', '16', '--no-progress',
        '--min-run-time', '0.02']


@pytest.mark.skipif(not has_shared('PROTEINS'),
                    reason='shared PROTEINS data absent')
def test_tiny_run_on_proteins(tmp_path):
    out = tmp_path / 'rows.json'
    result = run_example(SCRIPT, '--root', str(SHARED_DATA), *TINY,
                         '--json', str(out))
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [r['method'] for r in rows] == ['FP32', 'QAT', 'DQ', 'A²Q']
    assert all(r['runs'] == 3 and r['source'] == 'real' for r in rows)
    assert '1113 graphs' in result.stdout
    # Every quantized GIN deployed, on all test graphs of each fold.
    assert rows[0]['not_deployed'] and rows[0]['speedup'] is None
    assert '| deployed accuracy |' in result.stdout
    for r in rows[1:]:
        assert r['deployed_runs'] == 3 and r['not_deployed'] is None
        assert r['deployed_bytes'] < r['float_bytes']
    for r in rows[1:]:  # the deployment contract
        assert r['same_predictions'] == 1.0, (r['method'], result.stdout)
        assert r['deployed_acc_mean'] == pytest.approx(r['acc_mean'])
    assert 'WARNING' not in result.stdout


@pytest.mark.skipif(not has_shared('bbbp'), reason='shared BBBP data absent')
def test_tiny_run_on_bbbp():
    pytest.importorskip('rdkit')
    result = run_example(SCRIPT, '--dataset', 'BBBP', '--root',
                         str(SHARED_DATA), *TINY, '--method', 'qat')
    assert result.returncode == 0, result.stderr
    assert '2039 graphs' in result.stdout and '| QAT | 4 |' in result.stdout


def test_empty_root_is_an_error(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    # Nothing under --root: an error naming it, not a silent stand-in.
    assert_one_line_error(run_example(SCRIPT, '--root', str(empty), *TINY),
                          '--root')


def test_offline_stand_in_is_announced(monkeypatch, capsys, tmp_path):
    example = load_example(SCRIPT)
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)
    monkeypatch.setattr('pyg_qgnn.datasets.locate.shared_data_candidates',
                        lambda: [])
    monkeypatch.setattr('pyg_qgnn.datasets.tu.TUDataset',
                        lambda *a, **k: (_ for _ in ()).throw(
                            OSError('offline')))
    out = tmp_path / 'rows.json'
    example.main(example.build_parser().parse_args(
        TINY + ['--method', 'qat', '--json', str(out)]))
    printed = capsys.readouterr().out
    assert 'SYNTHETIC' in printed
    assert 'GIN on a SYNTHETIC stand-in for PROTEINS' in printed
    assert {r['source'] for r in json.loads(out.read_text())} == {'synthetic'}


@pytest.mark.parametrize('args,argument', [
    (['--folds', '0'], '--folds'),
    (['--folds', '2'], '--folds'),
    (['--bits', '9'], '--bits'),
    (['--a2q-groups', '0'], '--a2q-groups'),
    (['--json', '/dev/null/x.json'], '--json'),
    (['--min-run-time', '-1'], '--min-run-time'),
])
def test_bad_arguments(args, argument, capsys):
    parser = load_example(SCRIPT).build_parser()
    assert_parse_error(parser, args, argument, capsys)


def test_bad_argument_from_the_command_line():
    assert_one_line_error(run_example(SCRIPT, '--bits', '9'), '--bits')


def test_help_explains_the_deployed_columns():
    result = run_example(SCRIPT, '--help')
    assert result.returncode == 0
    assert 'Columns:' in result.stdout and 'deployed model' in result.stdout
    assert '--min-run-time' in result.stdout and ':obj:' not in result.stdout
