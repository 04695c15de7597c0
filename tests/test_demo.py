import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from pyg_qgnn.__main__ import build_parser, main
from pyg_qgnn.demo.quant import run_quant
from pyg_qgnn.train import DeployedRow, MethodRow, format_rows
from tests.conftest import SHARED_DATA, has_shared

ROOT = Path(__file__).resolve().parents[1]
DEPLOYED_FIELDS = {f.name for f in fields(DeployedRow)} - {'method', 'bits'}


@pytest.mark.skipif(not has_shared('Cora'), reason='shared Cora data absent')
def test_demo_on_cora_writes_rows(tmp_path, capsys):
    out = tmp_path / 'rows.json'
    plot = tmp_path / 'rows.png'
    main(['demo', '--only', 'quant', '--root', str(SHARED_DATA), '--seeds',
          '2', '--epochs', '30',
          '--finetune-epochs', '10', '--json', str(out), '--plot', str(plot),
          '--no-progress'])
    rows = json.loads(out.read_text())
    assert [(r['method'], r['bits']) for r in rows] == [
        ('FP32', 32), ('QAT', 8), ('QAT', 4), ('DQ', 8), ('DQ', 4), ('A²Q', 4)]
    for r in rows:
        assert set(r) == {'method', 'bits', 'acc_mean', 'acc_std', 'avg_bits',
                          'bytes', 'runs', 'section', 'dataset', 'source',
                          *DEPLOYED_FIELDS}
        assert (r['section'], r['dataset'], r['source']) == ('quant', 'Cora',
                                                            'real')
        assert 0.3 < r['acc_mean'] <= 1.0 and r['acc_std'] >= 0
        assert r['runs'] == 2
    # Each quantized GCN deployed: the same predictions, a time against float.
    assert rows[0]['not_deployed'] and rows[0]['deployed_time_s'] is None
    for r in rows[1:]:
        assert r['same_predictions'] == 1.0 and r['deployed_runs'] == 2
        assert r['deployed_acc_mean'] == r['acc_mean']
        assert r['deployed_time_s'] > 0 and r['float_time_s'] > 0
        assert r['deployed_bytes'] < r['float_bytes']
    sizes = [r['bytes'] for r in rows]
    # 2-layer GCN on Cora: weights dominate, so INT8 < 1/3 and INT4 < 1/5.
    assert sizes[1] < sizes[0] / 3 and sizes[2] < sizes[0] / 5
    assert sizes[3] == sizes[1] and sizes[4] == sizes[2]  # DQ stores as QAT
    assert 1.0 <= rows[5]['avg_bits'] <= 8.0
    assert plot.stat().st_size > 0
    printed = capsys.readouterr().out
    assert '| QAT | 4 |' in printed and 'Kipf' in printed
    assert '| deployed ms | float ms | speed-up |' in printed
    assert 'WARNING' not in printed
    assert 'GCN on Cora:' in printed and 'SYNTHETIC' not in printed


def test_demo_synthetic_fallback_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr('pyg_qgnn.datasets.locate.shared_data_candidates',
                        lambda: [])
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)
    monkeypatch.setattr('pyg_qgnn.datasets.planetoid._download',
                        lambda name: (_ for _ in ()).throw(OSError('offline')))
    out = tmp_path / 'rows.json'
    main(['demo', '--only', 'quant', '--seeds', '1', '--epochs', '5',
          '--finetune-epochs', '2', '--bits', '8', '--methods', 'qat',
          '--no-progress', '--json', str(out)])
    printed = capsys.readouterr().out
    assert 'SYNTHETIC' in printed and '| QAT | 8 |' in printed
    # The title can never be read as a result on Cora.
    assert 'GCN on a SYNTHETIC stand-in for Cora' in printed
    assert 'GCN on Cora' not in printed
    rows = json.loads(out.read_text())
    assert {(r['dataset'], r['source']) for r in rows} == {('Cora',
                                                            'synthetic')}


def test_table_format():
    rows = [MethodRow('FP32', 32, 0.8, 0.01, 32.0, 1000, 2),
            MethodRow('QAT', 8, 0.79, 0.0, 8.0, 250, 2)]
    table = format_rows(rows)
    assert '| QAT | 8 | 79.00 ± 0.00 | 8.00 | 250 | 4.00x |' in table


def demo_cli(*args, **env):
    return subprocess.run([sys.executable, '-m', 'pyg_qgnn', 'demo', *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_cli_help_is_plain_text():
    result = demo_cli('--help')
    assert result.returncode == 0 and '--dataset' in result.stdout
    assert ':func:' not in result.stdout and ':class:' not in result.stdout
    assert 'quantize_model' in result.stdout  # the role's text stays
    assert 'Columns:' in result.stdout


def _file(tmp_path):
    file = tmp_path / 'a_file'
    file.write_text('x')
    return str(file)


@pytest.mark.parametrize('args,argument', [
    (['--seeds', '0'], '--seeds'),
    (['--seeds', '-3'], '--seeds'),
    (['--epochs', '-1'], '--epochs'),
    (['--epochs', '0'], '--epochs'),
    (['--finetune-epochs', '-1'], '--finetune-epochs'),
    (['--bits', '9'], '--bits'),
    (['--observer', 'median'], '--observer'),
    (['--dataset', 'Foo'], '--dataset'),
    (['--only', 'nothing'], '--only'),
    (['--methods', 'xyz'], '--methods'),
    (['--a2q-target', '9'], '--a2q-target'),
    (['--root', '/nonexistent'], '--root'),
    (['--json', '{file}/x.json'], '--json'),
    (['--plot', '{file}/x.png'], '--plot'),
])
def test_bad_arguments_fail_fast_in_one_line(tmp_path, args, argument,
                                            capsys):
    args = [a.format(file=_file(tmp_path)) for a in args]
    # Refused by the parser, before any data is read: in-process is enough.
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(['demo', *args])
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), captured.err
    assert argument in lines[0] and captured.out == ''


def test_bad_argument_from_the_command_line():
    result = demo_cli('--seeds', '0')
    assert result.returncode == 2 and result.stdout == ''
    assert result.stderr == "error: argument --seeds: expected a positive " \
        "integer (got '0') (see --help)\n"


def test_root_without_data_is_a_one_line_error(tmp_path):
    result = demo_cli('--root', str(tmp_path), '--no-progress')
    assert result.returncode == 2
    assert result.stderr.startswith('error: argument --root: ')
    assert len(result.stderr.strip().splitlines()) == 1
    debug = demo_cli('--root', str(tmp_path), '--no-progress', '--debug')
    assert debug.returncode != 0 and 'Traceback' in debug.stderr
    env = demo_cli('--root', str(tmp_path), '--no-progress',
                   PYG_QGNN_DEBUG='1')
    assert 'Traceback' in env.stderr


def test_missing_output_folder_is_created_before_work(tmp_path, monkeypatch):
    monkeypatch.setattr('pyg_qgnn.demo.quant.run_quant',
                        lambda *a, **k: (_ for _ in ()).throw(
                            AssertionError('folder must exist before work')
                            if not (tmp_path / 'new').is_dir() else
                            KeyboardInterrupt()))
    assert main(['demo', '--only', 'quant', '--json',
                 str(tmp_path / 'new' / 'rows.json'), '--no-progress']) == 130


def test_run_demo_rejects_nonpositive_counts():
    with pytest.raises(ValueError, match="'seeds'"):
        run_quant(seeds=0)
    with pytest.raises(ValueError, match="'finetune_epochs'"):
        run_quant(finetune_epochs=-1)


def test_console_script_is_declared():
    from importlib.metadata import entry_points
    scripts = {ep.name: ep.value for ep in entry_points(group='console_scripts')}
    if 'pyg-qgnn' not in scripts:
        # Running from a source tree that was never installed.
        setup_cfg = (ROOT / 'setup.cfg').read_text()
        assert 'pyg-qgnn = pyg_qgnn.__main__:main' in setup_cfg
    else:
        assert scripts['pyg-qgnn'] == 'pyg_qgnn.__main__:main'
