import json
import types

import pytest
import torch

from pyg_qgnn import cli, deploy
from tests.conftest import SHARED_DATA, has_shared
from tests.examples.conftest import (
    assert_one_line_error,
    assert_parse_error,
    load_example,
    run_example,
)

SCRIPT = 'modelnet40_binary_dgcnn.py'
#: A tiny DGCNN on 64 points: the whole path in seconds.
TINY = ['--points', '64', '--k', '4', '--conv-channels', '8', '8',
        '--embed-channels', '16', '--hidden-channels', '16',
        '--teacher-epochs', '1', '--epochs', '1', '--batch-size', '16',
        '--threads', '1', '--no-progress']
needs_subset = pytest.mark.skipif(
    not has_shared('modelnet40_normal_resampled_subset'),
    reason='shared ModelNet40 subset absent')


@pytest.fixture(scope='module')
def example():
    return load_example(SCRIPT)


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()  # --threads sets it in-process
    yield
    torch.set_num_threads(threads)


def run_in_process(example, *args):
    r"""The script's command line in this process: exit status and the
    captured error output, like :func:`run_example`."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            status = cli.run(example.main, example.build_parser(),
                             list(args), exit=False)
        except SystemExit as e:  # argparse's own errors
            status = e.code
    return types.SimpleNamespace(returncode=status, stderr=err.getvalue())


@needs_subset
def test_cascade_with_lsp_on_the_subset_deploys_exactly(tmp_path):
    out, plot, saved = (tmp_path / 'rows.json', tmp_path / 'curves.png',
                        tmp_path / 'bf1.safetensors')
    result = run_example(SCRIPT, '--root', str(SHARED_DATA), *TINY,
                         '--variant', 'bf1', '--cascade', '--lsp', 'hamming',
                         '--knn', 'hamming', '--json', str(out), '--plot',
                         str(plot), '--save', str(saved))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    rows = report['rows']
    assert [(r['model'], r['stage']) for r in rows] == [
        ('float DGCNN', 0), ('binary DGCNN BF1', 3)]
    for r in rows:
        assert (r['dataset'], r['source']) == ('ModelNet40', 'real')
        assert r['split'] == dict(train=108, val=19, test=29)
        assert r['deployed_equal'] and r['seeds'] == [0]
        assert r['deployed_acc_mean'] == r['test_acc_mean']
        assert 0 <= r['test_mean_class_acc_mean'] <= 1
        assert (r['knn'], r['lsp'], r['stages']) == ('hamming', 'hamming',
                                                     [1, 2, 3])
    assert rows[1]['bytes'] < rows[0]['bytes'] == rows[1]['float_bytes']
    phases = [h['phase'] for h in report['curves'][0]]
    assert phases == ['float', 'stage 1', 'stage 2', 'stage 3']
    assert plot.stat().st_size > 0
    assert '| binary DGCNN BF1 | 3 |' in result.stdout
    assert 'split seed 0' in result.stdout and 'SYNTHETIC' not in \
        result.stdout
    # The saved file holds packed bits and loads into a converted skeleton.
    example = load_example(SCRIPT)
    args = example.build_parser().parse_args(TINY + ['--variant', 'bf1'])
    recipe = example.recipe_from(args)
    skeleton = deploy.convert(recipe.binary_model(40).eval())
    restored = deploy.load(saved, skeleton)
    assert deploy.nbytes(restored) == rows[1]['bytes']


@needs_subset
def test_float_teacher_is_saved_and_reused(tmp_path, example, capsys):
    teacher = tmp_path / 'dgcnn.safetensors'
    base = ['--root', str(SHARED_DATA), *TINY]
    assert run_in_process(example, *base, '--variant', 'float', '--save',
                          str(teacher)).returncode == 0
    out = tmp_path / 'rows.json'
    assert run_in_process(example, *base, '--variant', 'rf', '--stage', '2',
                          '--teacher', str(teacher), '--seeds', '2',
                          '--json', str(out)).returncode == 0
    rows = json.loads(out.read_text())['rows']
    assert [(r['model'], r['stage']) for r in rows] == [
        ('float DGCNN (given)', 0), ('binary DGCNN RF', 2)]
    assert rows[1]['seeds'] == [0, 1] and rows[1]['deployed_equal']
    # The given teacher is the same model in both seeds.
    assert rows[0]['test_acc_std'] == 0
    # A teacher of another architecture is refused, naming the flag.
    result = run_in_process(example, *base, '--variant', 'rf', '--teacher',
                            str(teacher), '--conv-channels', '8', '16')
    assert_one_line_error(result, '--teacher')


def test_offline_stand_in_is_announced(example, monkeypatch, capsys,
                                       tmp_path):
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)
    monkeypatch.setattr('pyg_qgnn.datasets.locate.shared_data_candidates',
                        lambda: [])
    from pyg_qgnn.datasets import modelnet
    shapes = modelnet.synthetic_shapes  # smaller: 3 + 1 shapes per class
    monkeypatch.setattr(modelnet, 'synthetic_shapes', lambda points, seed:
                        shapes(points, train_per_class=3, test_per_class=1))
    out = tmp_path / 'rows.json'
    example.main(example.build_parser().parse_args(
        TINY + ['--variant', 'bf2', '--json', str(out)]))
    printed = capsys.readouterr().out
    assert 'SYNTHETIC' in printed
    assert 'DGCNN on a SYNTHETIC stand-in for ModelNet40' in printed
    rows = json.loads(out.read_text())['rows']
    assert {r['source'] for r in rows} == {'synthetic'}
    assert rows[1]['deployed_equal'] and rows[1]['stage'] == 3


def test_empty_root_is_an_error(example, tmp_path):
    assert_one_line_error(run_in_process(example, '--root', str(tmp_path),
                                         *TINY), '--root')


@pytest.mark.parametrize('args,argument', [
    (['--variant', 'xnor'], '--variant'),
    (['--knn', 'cosine'], '--knn'),
    (['--lsp', 'kl'], '--lsp'),
    (['--stage', '4'], '--stage'),
    (['--cascade', '--stage', '2'], '--stage'),
    (['--points', '0'], '--points'),
    (['--k', '0'], '--k'),
    (['--val-fraction', '1.5'], '--val-fraction'),
    (['--teacher', '/nonexistent.safetensors'], '--teacher'),
    (['--json', '/dev/null/x.json'], '--json'),
])
def test_bad_arguments(example, args, argument, capsys):
    assert_parse_error(example.build_parser(), args, argument, capsys)


@pytest.mark.parametrize('args,argument', [
    (['--variant', 'float', '--lsp', 'rbf'], '--lsp'),
    (['--variant', 'float', '--cascade'], '--cascade'),
    (['--variant', 'float', '--knn', 'hamming'], '--knn'),
    (['--variant', 'rf', '--lsp', 'hamming'], '--lsp'),
])
def test_flags_that_do_not_fit_the_variant(example, args, argument,
                                           tmp_path):
    # Refused before any data is read (an empty --root would be an error).
    assert_one_line_error(run_in_process(example, '--root', str(tmp_path),
                                         *args), argument)


def test_bad_argument_from_the_command_line():
    assert_one_line_error(run_example(SCRIPT, '--epochs', '0'), '--epochs')
