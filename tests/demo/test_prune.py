import json

import pytest

from pyg_qgnn.__main__ import main
from pyg_qgnn.demo.prune import run_prune
from tests.conftest import SHARED_DATA, has_shared


@pytest.mark.skipif(not has_shared('Cora'), reason='shared Cora data absent')
def test_prune_section_on_cora(tmp_path, capsys):
    out, plot = tmp_path / 'rows.json', tmp_path / 'prune.png'
    main(['demo', '--only', 'prune', '--root', str(SHARED_DATA), '--seeds',
          '1', '--prune-epochs', '10', '--prune-finetune-epochs', '2',
          '--json', str(out), '--plot', str(plot), '--no-progress'])
    rows = json.loads(out.read_text())
    assert [(r['sparsity'], r['finetuned']) for r in rows] == [
        (s, f) for s in (0.0, 0.5, 0.9) for f in (False, True)]
    for r in rows:
        assert (r['section'], r['dataset'], r['source']) == ('prune', 'Cora',
                                                             'real')
        assert r['achieved_mean'] == pytest.approx(r['sparsity'], abs=1e-3)
        assert 0.0 < r['score_mean'] <= 1.0
    ninety = rows[4]
    assert ninety['dense_bytes_mean'] / ninety['bytes_mean'] >= 8.0
    assert ninety['dense_bytes_mean'] / ninety['bytes_int8_mean'] >= 16.0
    assert plot.stat().st_size > 0
    printed = capsys.readouterr().out
    assert 'GCN on Cora, global magnitude pruning' in printed
    assert '| 0.90 | 0.900 | yes |' in printed


@pytest.mark.parametrize('args,argument', [
    (['--prune-sparsities', '1.5'], '--prune-sparsities'),
    (['--prune-epochs', '0'], '--prune-epochs'),
    (['--prune-finetune-epochs', '-1'], '--prune-finetune-epochs'),
])
def test_bad_arguments_fail_fast(capsys, args, argument):
    with pytest.raises(SystemExit) as exit_info:
        main(['demo', '--only', 'prune', *args])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: argument ' +
                                                   argument)


def test_run_prune_rejects_nonpositive_counts():
    with pytest.raises(ValueError, match="'seeds'"):
        run_prune(seeds=0)
    with pytest.raises(ValueError, match="'finetune_epochs'"):
        run_prune(finetune_epochs=0)
