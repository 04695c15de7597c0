import json

import pytest
import torch

from pyg_qgnn.__main__ import main
from pyg_qgnn.datasets import modelnet
from pyg_qgnn.demo import binary
from tests.conftest import SHARED_DATA, has_shared

TINY = ['--only', 'binary', '--binary-points', '32', '--binary-epochs', '1',
        '--no-progress']


@pytest.fixture(autouse=True)
def small_knn_case(monkeypatch):
    monkeypatch.setattr(binary, 'KNN_CASE', dict(clouds=2, points=64,
                                                 dims=16, k=4))


def check_rows(rows, source):
    models = [r for r in rows if 'stage' in r]
    assert [(r['model'], r['stage']) for r in models] == [
        ('float DGCNN', 0), ('binary DGCNN BF1', 3)]
    for r in rows:
        assert (r['section'], r['dataset'], r['source']) == (
            'binary', 'ModelNet40', source)
    assert all(r['deployed_equal'] for r in models)
    paper, = [r for r in rows if r['model'] == 'paper-size DGCNN bf1']
    assert paper['float_bytes'] / paper['bytes'] >= 15
    knn, = [r for r in rows if r['model'] == 'kNN']
    assert knn['float_seconds'] > 0 and knn['hamming_seconds'] > 0


@pytest.mark.skipif(not has_shared('modelnet40_normal_resampled_subset'),
                    reason='shared ModelNet40 subset absent')
def test_binary_section_on_the_shared_subset(tmp_path, capsys):
    out, plot = tmp_path / 'rows.json', tmp_path / 'binary.png'
    main(['demo', *TINY, '--binary-root', str(SHARED_DATA), '--json',
          str(out), '--plot', str(plot)])
    check_rows(json.loads(out.read_text()), 'real')
    assert plot.stat().st_size > 0
    printed = capsys.readouterr().out
    assert 'Small DGCNN (32 points, k = 10) on ModelNet40 (156 shapes)' in \
        printed
    assert '| binary DGCNN BF1 | 3 |' in printed and 'Hamming' in printed
    assert 'SYNTHETIC' not in printed


def test_offline_stand_in_is_announced(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)
    monkeypatch.setattr('pyg_qgnn.datasets.locate.shared_data_candidates',
                        lambda: [])
    shapes = modelnet.synthetic_shapes  # smaller: 3 + 1 shapes per class
    monkeypatch.setattr(modelnet, 'synthetic_shapes',
                        lambda points, seed: shapes(points, 3, 1))
    out = tmp_path / 'rows.json'
    threads = torch.get_num_threads()
    main(['demo', *TINY, '--json', str(out)])
    assert torch.get_num_threads() == threads  # trains on one, restores
    check_rows(json.loads(out.read_text()), 'synthetic')
    assert 'on a SYNTHETIC stand-in for ModelNet40' in capsys.readouterr().out


def test_knn_timing_measures_both_paths():
    timing = binary.knn_timing(clouds=2, points=40, dims=20, k=3, repeats=2)
    assert set(timing) == {'float', 'hamming'}
    assert all(t > 0 for t in timing.values())


@pytest.mark.parametrize('args,argument', [
    (['--binary-epochs', '0'], '--binary-epochs'),
    (['--binary-points', '-1'], '--binary-points'),
    (['--binary-variant', 'float'], '--binary-variant'),
])
def test_bad_arguments_fail_fast(capsys, args, argument):
    with pytest.raises(SystemExit) as exit_info:
        main(['demo', '--only', 'binary', *args])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: argument ' +
                                                   argument)
