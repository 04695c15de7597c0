import importlib.util
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / 'examples'


def run_example(script: str, *args: str, timeout: int = 300):
    r"""Runs :obj:`examples/<script>` in a subprocess from the repo root."""
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args],
                          cwd=EXAMPLES.parent, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(result, argument: str):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
    assert argument in lines[0]
    assert 'Traceback' not in result.stderr


def load_example(script: str):
    r"""Imports :obj:`examples/<script>` as a module (to call its
    :obj:`main` in-process, e.g. with monkeypatched data sources)."""
    path = EXAMPLES / script
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_parse_error(parser, args, argument: str, capsys):
    r"""In-process twin of :func:`assert_one_line_error` for arguments the
    parser itself refuses (no interpreter start-up per case)."""
    import pytest

    with pytest.raises(SystemExit) as info:
        parser.parse_args(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    assert argument in lines[0]
