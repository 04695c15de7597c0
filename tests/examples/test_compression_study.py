import json

import pytest

from tests.conftest import SHARED_DATA, has_shared
from tests.examples.conftest import assert_one_line_error, run_example

SCRIPT = 'compression_study.py'


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
    (['--task', 'graph', '--dataset', 'Cora'], '--dataset'),
])
def test_bad_arguments(args, argument):
    assert_one_line_error(run_example(SCRIPT, *args), argument)


def test_plot_dir_that_is_a_file(tmp_path):
    file = tmp_path / 'a_file'
    file.write_text('x')
    assert_one_line_error(run_example(SCRIPT, '--plot-dir', str(file)),
                          '--plot-dir')
