import json

import pytest

from pyg_qgnn.__main__ import main
from tests.conftest import SHARED_DATA, has_shared


TINY = ['demo', '--only', 'gnaq', '--gnaq-users', '300', '--gnaq-epochs',
        '5', '--gnaq-finetune-epochs', '1', '--seeds', '1', '--no-progress']


@pytest.mark.skipif(not has_shared('gowalla'),
                    reason='shared Gowalla data absent')
def test_gnaq_section_on_gowalla(tmp_path, capsys):
    out = tmp_path / 'rows.json'
    main(TINY + ['--gnaq-root', str(SHARED_DATA), '--json', str(out)])
    rows = json.loads(out.read_text())
    assert [(r['method'], r['bits']) for r in rows] == [
        ('FP32 LightGCN', 32), ('GNAQ', 2)]
    for r in rows:
        assert (r['section'], r['dataset'], r['source']) == ('gnaq',
                                                            'gowalla', 'real')
        assert 0 < r['test']['recall@20'] <= 1 and r['runs'] == 1
    assert rows[0]['bytes'] / rows[1]['bytes'] >= 10
    printed = capsys.readouterr().out
    assert 'LightGCN on a Gowalla subsample' in printed
    assert '| GNAQ | 2 |' in printed and 'SYNTHETIC' not in printed


def test_gnaq_section_synthetic_fallback(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr('pyg_qgnn.datasets.recsys.shared_data_candidates',
                        lambda: [])
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)
    out = tmp_path / 'rows.json'
    main(TINY + ['--json', str(out)])
    printed = capsys.readouterr().out
    assert 'SYNTHETIC' in printed
    assert 'LightGCN on a SYNTHETIC stand-in for gowalla' in printed
    rows = json.loads(out.read_text())
    assert {r['source'] for r in rows} == {'synthetic'}


@pytest.mark.parametrize('args,argument', [
    (['--gnaq-users', '0'], '--gnaq-users'),
    (['--gnaq-epochs', '0'], '--gnaq-epochs'),
    (['--gnaq-finetune-epochs', '-1'], '--gnaq-finetune-epochs'),
    (['--gnaq-root', '/nonexistent'], '--gnaq-root'),
])
def test_bad_arguments(args, argument, capsys):
    with pytest.raises(SystemExit) as info:  # argparse, before any work
        main(['demo', '--only', 'gnaq', *args])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and argument in \
        err[0]
