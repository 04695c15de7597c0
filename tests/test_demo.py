import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyg_qgnn.__main__ import main
from pyg_qgnn.demo import DemoRow, format_table
from tests.conftest import SHARED_DATA, has_shared

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not has_shared('Cora'), reason='shared Cora data absent')
def test_demo_on_cora_writes_rows(tmp_path, capsys):
    out = tmp_path / 'rows.json'
    plot = tmp_path / 'rows.png'
    main(['demo', '--root', str(SHARED_DATA), '--seeds', '2', '--epochs', '30',
          '--finetune-epochs', '10', '--json', str(out), '--plot', str(plot),
          '--no-progress'])
    rows = json.loads(out.read_text())
    assert [(r['method'], r['bits']) for r in rows] == \
        [('float', 32), ('QAT', 8), ('QAT', 4)]
    for r in rows:
        assert set(r) == {'method', 'bits', 'acc_mean', 'acc_std', 'bytes'}
        assert 0.3 < r['acc_mean'] <= 1.0 and r['acc_std'] >= 0
    sizes = [r['bytes'] for r in rows]
    # 2-layer GCN on Cora: weights dominate, so INT8 < 1/3 and INT4 < 1/5.
    assert sizes[1] < sizes[0] / 3 and sizes[2] < sizes[0] / 5
    assert plot.stat().st_size > 0
    printed = capsys.readouterr().out
    assert '| QAT | 4 |' in printed and 'Kipf' in printed


def test_demo_synthetic_fallback_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr('pyg_qgnn.datasets.planetoid.shared_data_candidates',
                        lambda: [])
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)
    monkeypatch.setattr('pyg_qgnn.datasets.planetoid._download',
                        lambda name: (_ for _ in ()).throw(OSError('offline')))
    main(['demo', '--seeds', '1', '--epochs', '5', '--finetune-epochs', '2',
          '--bits', '8', '--no-progress'])
    printed = capsys.readouterr().out
    assert 'SYNTHETIC' in printed and '| QAT | 8 |' in printed


def test_table_format():
    rows = [DemoRow('float', 32, 0.8, 0.01, 1000), DemoRow('QAT', 8, 0.79, 0.0, 250)]
    table = format_table(rows)
    assert '| QAT | 8 | 79.00 ± 0.00 | 250 | 4.00x |' in table


def test_cli_help_and_bad_arguments():
    result = subprocess.run([sys.executable, '-m', 'pyg_qgnn', 'demo', '--help'],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and '--dataset' in result.stdout
    result = subprocess.run([sys.executable, '-m', 'pyg_qgnn', 'demo',
                             '--observer', 'median'], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--observer" in result.stderr
    with pytest.raises(ValueError, match="'dataset'"):
        main(['demo', '--dataset', 'Reddit', '--no-progress'])


def test_console_script_is_declared():
    from importlib.metadata import entry_points
    scripts = {ep.name: ep.value for ep in entry_points(group='console_scripts')}
    if 'pyg-qgnn' not in scripts:
        # Running from a source tree that was never installed.
        setup_cfg = (ROOT / 'setup.cfg').read_text()
        assert 'pyg-qgnn = pyg_qgnn.__main__:main' in setup_cfg
    else:
        assert scripts['pyg-qgnn'] == 'pyg_qgnn.__main__:main'
