import importlib.util
import json

import pytest

from pyg_qgnn import cli
from tests.conftest import SHARED_DATA, has_shared
from tests.examples.conftest import (
    EXAMPLES,
    assert_one_line_error,
    run_example,
)

SCRIPT = 'recsys_gnaq.py'
#: --quick with even smaller schedules: the whole path in seconds.
TINY = ['--quick', '--epochs', '2', '--finetune-epochs', '1',
        '--eval-every', '1', '--no-progress']


@pytest.mark.skipif(not has_shared('gowalla'),
                    reason='shared Gowalla data absent')
def test_quick_run_on_gowalla(tmp_path):
    out = tmp_path / 'rows.json'
    saved = tmp_path / 'float.safetensors'
    result = run_example(SCRIPT, '--root', str(SHARED_DATA), *TINY,
                         '--json', str(out), '--save-pretrained', str(saved))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    rows = report['rows']
    assert [r['method'] for r in rows] == ['FP32 LightGCN',
                                           'LSQ per-node uniform', 'GNAQ']
    assert all(r['source'] == 'real' and r['dataset'] == 'gowalla'
               for r in rows)
    assert rows[0]['bytes'] / rows[2]['bytes'] >= 10  # d = 64, 2 bits
    assert {c['method'] for c in report['curves']} == {'fp32', 'lsq', 'gnaq'}
    assert '| GNAQ | 2 | 64 |' in result.stdout and 'subsample' in \
        result.stdout
    # The saved float model starts a second run; GNAQ ablations included.
    again = run_example(SCRIPT, '--root', str(SHARED_DATA), *TINY,
                        '--pretrained', str(saved), '--ablations')
    assert again.returncode == 0, again.stderr
    for label in ('GNAQ w/o RAU', 'GNAQ w/o DQS', 'GNAQ w/o rank loss',
                  '(Eq. 14)', '(Eq. 11)'):
        assert label in again.stdout
    # A table of another dimension is refused, naming the argument.
    assert_one_line_error(run_example(SCRIPT, '--root', str(SHARED_DATA),
                                      *TINY, '--pretrained', str(saved),
                                      '--dim', '128'), '--pretrained')


def load_script():
    spec = importlib.util.spec_from_file_location('recsys_gnaq',
                                                  EXAMPLES / SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_process(capsys, *args) -> tuple:
    r"""Exit status and stderr lines of the script's main, in this process
    (no interpreter start-up per case)."""
    script = load_script()
    try:
        status = cli.run(script.main, script.build_parser(), list(args),
                         exit=False)
    except SystemExit as e:  # argparse, before any work
        status = e.code
    return status, capsys.readouterr().err.strip().splitlines()


def test_root_without_data_is_an_error(tmp_path, capsys):
    empty = tmp_path / 'empty'
    empty.mkdir()
    # An explicit --root without data is an error, not a silent stand-in.
    status, err = run_in_process(capsys, '--root', str(empty), *TINY)
    assert status == 2 and len(err) == 1
    assert err[0].startswith('error: argument --root: ')


@pytest.mark.parametrize('args,argument', [
    (['--bits', '9'], '--bits'),
    (['--dim', '100'], '--dim'),
    (['--pretrained', '/nonexistent.safetensors'], '--pretrained'),
    (['--json', '/dev/null/x.json'], '--json'),
])
def test_bad_arguments(capsys, args, argument):
    status, err = run_in_process(capsys, *args)
    assert status == 2 and len(err) == 1
    assert err[0].startswith('error: argument ' + argument)
