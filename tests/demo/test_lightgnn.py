import json
import math

import pytest
import torch

from pyg_qgnn.__main__ import main
from pyg_qgnn.demo import lightgnn
from tests.conftest import SHARED_DATA, has_shared

TINY = ['demo', '--only', 'lightgnn', '--lightgnn-users', '2000',
        '--lightgnn-epochs', '5', '--lightgnn-intermediate-epochs', '1',
        '--lightgnn-run-epochs', '1', '--lightgnn-final-epochs', '1',
        '--no-progress']
HEADER = ('| model | layers | Recall@20 | edges | entries | bytes | '
          'smaller by | FLOPs | fewer by | forward ms | speed-up |')


@pytest.fixture(autouse=True)
def short_timing(monkeypatch):
    monkeypatch.setattr(lightgnn, 'MIN_RUN_TIME', 0.01)


def check_rows(rows, source):
    assert [r['method'] for r in rows] == ['teacher', 'lightgnn']
    teacher, student = rows
    for r in rows:
        assert (r['section'], r['dataset'], r['source']) == (
            'lightgnn', 'lightgnn_yelp', source)
        assert 0 <= r['test']['recall@20'] <= 1
        assert r['forward_seconds'] > 0 and 'history' not in r
    assert (teacher['layers'], student['layers']) == (3, 2)
    assert teacher['edge_share'] == teacher['entry_share'] == 1.0
    # The paper's Gowalla shares: 44% of the edges, 33% of the entries.
    assert math.isclose(student['edge_share'], 0.44, abs_tol=0.01)
    assert math.isclose(student['entry_share'], 0.33, abs_tol=0.01)
    assert student['bytes'] < teacher['bytes'] / 2
    assert student['flops'] < teacher['flops']


@pytest.mark.skipif(not has_shared('lightgnn_yelp'),
                    reason='shared LightGNN Yelp data absent')
def test_lightgnn_section_on_yelp(tmp_path, capsys):
    out, plot = tmp_path / 'rows.json', tmp_path / 'lightgnn.png'
    threads = torch.get_num_threads()
    main(TINY + ['--lightgnn-root', str(SHARED_DATA), '--json', str(out),
                 '--plot', str(plot)])
    assert torch.get_num_threads() == threads  # trains on one, restores
    rows = json.loads(out.read_text())
    check_rows(rows, 'real')
    assert plot.stat().st_size > 0
    printed = capsys.readouterr().out
    assert "LightGNN on a Yelp subsample (LightGNN's split): keep 44% of " \
        'edges and 33% of embedding entries' in printed
    assert HEADER in printed
    assert '| LightGCN teacher (3 layers) | 3 |' in printed
    assert '| LightGNN | 2 |' in printed and '| 44% | 33% |' in printed
    assert 'intermediate' not in printed and 'SYNTHETIC' not in printed


def test_lightgnn_section_synthetic_fallback(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr('pyg_qgnn.datasets.recsys.shared_data_candidates',
                        lambda: [])
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)
    out = tmp_path / 'rows.json'
    main(TINY + ['--json', str(out)])
    printed = capsys.readouterr().out
    assert 'SYNTHETIC' in printed
    assert 'LightGNN on a SYNTHETIC stand-in for lightgnn_yelp' in printed
    assert 'Yelp subsample' not in printed and HEADER in printed
    rows = json.loads(out.read_text())
    check_rows(rows, 'synthetic')


@pytest.mark.parametrize('args,argument', [
    (['--lightgnn-users', '0'], '--lightgnn-users'),
    (['--lightgnn-epochs', '0'], '--lightgnn-epochs'),
    (['--lightgnn-intermediate-epochs', '0'],
     '--lightgnn-intermediate-epochs'),
    (['--lightgnn-run-epochs', '-1'], '--lightgnn-run-epochs'),
    (['--lightgnn-final-epochs', 'x'], '--lightgnn-final-epochs'),
    (['--lightgnn-root', '/nonexistent'], '--lightgnn-root'),
])
def test_bad_arguments(args, argument, capsys):
    with pytest.raises(SystemExit) as info:  # argparse, before any work
        main(['demo', '--only', 'lightgnn', *args])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and argument in \
        err[0]


def test_root_without_the_data_is_a_one_line_error(tmp_path, capsys):
    # Found missing while running (not by the parser): a status, no raise.
    assert main(['demo', '--only', 'lightgnn', '--lightgnn-root',
                 str(tmp_path), '--no-progress']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        'error: argument --lightgnn-root: ')
