import importlib.util
import json

import pytest

from pyg_qgnn import cli
from pyg_qgnn.datasets.recsys import load_recsys, synthetic_interactions
from pyg_qgnn.train.lightgnn import ABLATIONS
from tests.conftest import SHARED_DATA, has_shared
from tests.examples.conftest import load_example, run_example

SCRIPT = 'recsys_lightgnn.py'
#: The shared dataset whose --quick subsample is smallest (about 1,000
#: users and 240 items): the whole pipeline in seconds. (Gowalla's takes
#: half a minute per student.)
DATASET = 'lightgnn_yelp'
#: --quick with even smaller schedules: one epoch per stage, two runs.
TINY = ['--quick', '--epochs', '2', '--run-epochs', '1', '--final-epochs',
        '1', '--intermediate-epochs', '1', '--edge-step', '0.5',
        '--emb-step', '0.5', '--no-progress']

pytestmark = pytest.mark.usefixtures('one_thread')
needs_yelp = pytest.mark.skipif(not has_shared(DATASET),
                                reason='shared LightGNN Yelp data absent')


def run_in_process(capsys, *args) -> tuple:
    r"""Exit status, stdout and stderr lines of the script's main, in this
    process (no interpreter start-up per case)."""
    script = load_example(SCRIPT)
    try:
        status = cli.run(script.main, script.build_parser(), list(args),
                         exit=False)
    except SystemExit as e:  # argparse, before any work
        status = e.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err.strip().splitlines()


def assert_error(status, err, argument):
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith('error: argument ' + argument), err


@needs_yelp
def test_quick_run_then_pretrained_ablation(tmp_path, capsys):
    out, plot = tmp_path / 'rows.json', tmp_path / 'rows.png'
    saved = tmp_path / 'teacher.safetensors'
    args = ['--root', str(SHARED_DATA), '--dataset', DATASET, *TINY]
    plotting = ['--plot', str(plot)] if importlib.util.find_spec(
        'matplotlib') is not None else []
    result = run_example(SCRIPT, *args, '--json', str(out),
                         '--save-pretrained', str(saved), *plotting)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())['rows']
    assert [r['method'] for r in rows] == ['teacher', 'intermediate',
                                           'lightgnn']
    assert all(r['source'] == 'real' and r['dataset'] == DATASET and
               r['quick'] for r in rows)
    teacher, middle, student = rows
    assert teacher['layers'] == 3 and student['layers'] == 2
    assert teacher['edge_share'] == teacher['entry_share'] == 1.0
    assert middle['edge_share'] > 1 and middle['entry_share'] == 1.0
    assert student['edge_share'] == pytest.approx(0.44, abs=1e-3)
    assert student['entry_share'] == pytest.approx(0.33, abs=1e-3)
    assert student['bytes'] < teacher['bytes']
    assert student['flops'] < teacher['flops']
    assert student['config']['edge_keep'] == 0.44
    assert student['config']['entry_step'] == 0.5
    assert student['config']['run_epochs'] == 1
    # two pruning runs and the fine-tuning run, one epoch each after the
    # evaluation of their start
    assert [h['epoch'] for h in student['history']] == [0, 1] * 3
    assert all(r['forward_seconds'] > 0 for r in rows)
    assert '| LightGNN |' in result.stdout
    assert 'subsample' in result.stdout
    assert saved.is_file()
    if plotting:
        assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    # The saved teacher starts a second run, with every ablation.
    status, stdout, err = run_in_process(
        capsys, *args, '--pretrained', str(saved), '--ablation', '--json',
        str(out))
    assert status == 0, err
    rows = json.loads(out.read_text())['rows']
    assert [r['method'] for r in rows] == ['teacher', 'intermediate',
                                           *ABLATIONS]
    assert rows[0]['train_seconds'] == 0.0  # loaded, not trained
    assert rows[0]['test'] == teacher['test']  # the same teacher
    for method, (label, _) in ABLATIONS.items():
        assert f'| {label} |' in stdout, method
    for row in rows[2:]:
        assert row['edge_share'] == student['edge_share']
        assert row['entry_share'] == student['entry_share']

    # A teacher of another shape is refused, naming the argument.
    status, _, err = run_in_process(capsys, *args, '--pretrained',
                                    str(saved), '--dim', '32')
    assert_error(status, err, '--pretrained')
    assert 'dimension' in err[0]
    status, _, err = run_in_process(capsys, *args, '--pretrained',
                                    str(saved), '--teacher-layers', '2')
    assert_error(status, err, '--pretrained')
    assert 'layers' in err[0]


@pytest.mark.parametrize('args,argument', [
    (['--edge-keep', '1.5'], '--edge-keep'),
    (['--emb-keep', '-0.1'], '--emb-keep'),
    (['--edge-step', 'half'], '--edge-step'),
    (['--dim', '0'], '--dim'),
    (['--student-layers', '-1'], '--student-layers'),
    (['--teacher-layers', '0'], '--teacher-layers'),
    (['--run-epochs', '0'], '--run-epochs'),
    (['--lr', '0'], '--lr'),
    (['--device', 'tpu'], '--device'),
    (['--methods', 'lightgnn', 'pruned'], '--methods'),
    (['--edge-values', 'int8'], '--edge-values'),
    (['--pretrained', '/nonexistent.safetensors'], '--pretrained'),
    (['--json', '/dev/null/x.json'], '--json'),
    (['--root', '/nonexistent-folder'], '--root'),
])
def test_bad_arguments(capsys, args, argument):
    status, _, err = run_in_process(capsys, *args)
    assert_error(status, err, argument)


@pytest.fixture
def tiny_root(tmp_path):
    r"""A tiny dataset in the LightGCN text format under
    :obj:`tmp_path/tiny/` (validation carved from train when loaded)."""
    data = synthetic_interactions(num_users=30, num_items=45,
                                  items_per_user=10, num_clusters=3)
    folder = tmp_path / 'tiny'
    folder.mkdir()
    train = [data.train, data.val]
    for name, splits in (('train', train), ('test', [data.test])):
        items = {}
        for pairs in splits:
            for user, item in pairs.t().tolist():
                items.setdefault(user, []).append(item)
        (folder / f'{name}.txt').write_text(''.join(
            f"{user} {' '.join(map(str, items[user]))}\n"
            for user in sorted(items)))
    return tmp_path


@pytest.mark.parametrize('args,argument', [
    (['--edge-keep', '0'], '--edge-keep'),
    (['--emb-keep', '0'], '--emb-keep'),
    (['--edge-step', '1'], '--edge-step'),
    (['--emb-step', '0'], '--emb-step'),
])
def test_shares_the_pruning_cannot_use_are_argument_errors(
        tiny_root, capsys, args, argument):
    # No edge or entry left, or steps that never (0) or at once (1) prune,
    # are refused as the arguments they are (fast: tiny data and epochs, in
    # case the check comes only after the teacher is trained).
    status, _, err = run_in_process(
        capsys, '--root', str(tiny_root), '--dataset', 'tiny', '--dim', '8',
        '--epochs', '1', '--run-epochs', '1', '--final-epochs', '1',
        '--intermediate-epochs', '1', '--batch-size', '256',
        '--no-progress', *args)
    assert_error(status, err, argument)


def test_tiny_dataset_runs(tiny_root, capsys, tmp_path):
    # The same tiny data is a valid input: the errors above come from the
    # arguments alone.
    out = tmp_path / 'tiny.json'
    status, stdout, err = run_in_process(
        capsys, '--root', str(tiny_root), '--dataset', 'tiny', '--dim', '8',
        '--epochs', '1', '--run-epochs', '1', '--final-epochs', '1',
        '--intermediate-epochs', '1', '--batch-size', '256', '--edge-step',
        '0.5', '--emb-step', '0.5', '--no-progress', '--json', str(out))
    assert status == 0, err
    rows = json.loads(out.read_text())['rows']
    assert [r['method'] for r in rows] == ['teacher', 'intermediate',
                                           'lightgnn']
    assert rows[0]['dataset'] == 'tiny' and not rows[0]['quick']
    config = rows[2]['config']
    assert (config['edge_scope'], config['entry_scope']) == ('user', 'node')
    assert config['tune_alpha'] and config['standardize_importance']
    assert (config['entry_score'], config['edge_value_dtype']) == (
        'saliency', 'float16')
    assert config['select_source']
    assert rows[2]['distilled_from'] == (
        'intermediate' if rows[1]['val_recall20'] >=
        rows[0]['val_recall20'] else 'teacher')

    status, _, err = run_in_process(
        capsys, '--root', str(tiny_root), '--dataset', 'tiny', '--dim', '8',
        '--epochs', '1', '--run-epochs', '1', '--final-epochs', '1',
        '--intermediate-epochs', '1', '--batch-size', '256', '--edge-step',
        '0.5', '--emb-step', '0.5', '--no-progress', '--paper-pruning',
        '--edge-values', 'float32', '--methods', 'lightgnn', 'random-both',
        '--always-intermediate',
        '--json', str(out))
    assert status == 0, err
    paper = json.loads(out.read_text())['rows']
    assert [r['method'] for r in paper] == ['teacher', 'intermediate',
                                            'lightgnn', 'random-both']
    config = paper[2]['config']
    assert (config['edge_scope'], config['entry_scope']) == ('graph',
                                                             'table')
    assert config['edge_value_dtype'] == 'float32'
    assert not config['select_source']
    assert [r['distilled_from'] for r in paper] == [
        '', 'teacher', 'intermediate', 'intermediate']
    # the same counts kept: two more bytes per kept edge in float32
    train = load_recsys('tiny', str(tiny_root)).train.size(1)
    assert paper[2]['edge_share'] == rows[2]['edge_share']
    assert paper[2]['bytes'] - rows[2]['bytes'] == 2 * round(
        rows[2]['edge_share'] * train)
    assert not config['tune_alpha'] and not config['standardize_importance']
    assert config['entry_score'] == 'magnitude'
