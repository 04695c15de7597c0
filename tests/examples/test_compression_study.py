import importlib.util
import json

import pytest

from pyg_qgnn import cli
from tests.conftest import SHARED_DATA, has_shared
from tests.examples.conftest import EXAMPLES, assert_one_line_error, \
    run_example

SCRIPT = 'compression_study.py'


def script():
    spec = importlib.util.spec_from_file_location('compression_study',
                                                  EXAMPLES / SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not has_shared('Cora'), reason='shared Cora data absent')
def test_tiny_run_on_cora_writes_rows_tables_and_figures(tmp_path):
    out, tables, figs = tmp_path / 'rows.json', tmp_path / 't.md', \
        tmp_path / 'figs'
    result = run_example(
        SCRIPT, '--root', str(SHARED_DATA), '--task', 'node', '--parts',
        'prune', 'lottery', '--runs', '1', '--epochs', '3',
        '--finetune-epochs', '1', '--sparsities', '0', '0.9',
        '--lottery-sparsities', '0.9', '--repeats', '1', '--json', str(out),
        '--markdown', str(tables), '--plot-dir', str(figs), '--no-progress')
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    prune = [r for r in rows if r['part'] == 'prune']
    assert len(prune) == 2 * 2 * 2  # scopes x sparsities x fine-tuning
    assert {(r['dataset'], r['source'], r['model']) for r in rows} == {
        ('Cora', 'real', 'gcn')}
    dense = next(r for r in prune if r['sparsity'] == 0.9)
    assert dense['dense_bytes_mean'] / dense['bytes_mean'] >= 8.0
    assert 'Table 5' in tables.read_text() and 'Lottery' in result.stdout
    assert (figs / 'figure2_layer_sparsity.png').stat().st_size > 0
    assert (figs / 'lottery_ticket.png').is_file()


def test_help_says_what_it_measures():
    result = run_example(SCRIPT, '--help')
    assert result.returncode == 0
    for word in ('size ratio', 'RAPL', '--quick', '--plot-dir'):
        assert word in result.stdout
    assert ':class:' not in result.stdout and ':obj:' not in result.stdout


@pytest.mark.parametrize('args,argument', [
    (['--task', 'edge'], '--task'),
    (['--dataset', 'MUTAG'], '--dataset'),
    (['--sparsities', '1.5'], '--sparsities'),
    (['--l2-rates', '-1'], '--l2-rates'),
    (['--runs', '0'], '--runs'),
    (['--bits', '9'], '--bits'),
    (['--parts', 'distill'], '--parts'),
    (['--root', '/nonexistent'], '--root'),
    (['--plot-dir', '{file}'], '--plot-dir'),
])
def test_bad_arguments_fail_before_any_work(tmp_path, capsys, args,
                                            argument):
    file = tmp_path / 'a_file'
    file.write_text('x')
    module = script()
    argv = [a.format(file=file) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(module.main, module.build_parser(), argv, exit=False)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: argument ' +
                                                   argument)


def test_dataset_of_another_task_is_a_one_line_error():
    # Through the real command line: exit status 2, one line, no traceback.
    assert_one_line_error(run_example(SCRIPT, '--task', 'graph', '--dataset',
                                      'Cora'), '--dataset')
