import argparse
import os

import pytest

from pyg_qgnn import cli


@pytest.mark.parametrize('parse,good,bad', [
    (cli.positive_int, [('1', 1), ('20', 20)], ['0', '-3', '1.5', 'x']),
    (cli.nonnegative_int, [('0', 0), ('7', 7)], ['-1', 'x']),
    (cli.positive_float, [('0.5', 0.5), ('3', 3.0)], ['0', '-1', 'inf', 'nan',
                                                      'x']),
    (cli.fraction, [('0', 0.0), ('0.25', 0.25), ('1', 1.0)], ['-0.1', '1.5',
                                                             'nan', 'x']),
    (cli.bit_width, [('1', 1), ('8', 8)], ['0', '9', '4.0', 'x']),
])
def test_number_types(parse, good, bad):
    for text, value in good:
        assert parse(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=repr(text)):
            parse(text)


def test_choice_is_case_insensitive():
    parse = cli.choice(['Cora', 'CiteSeer'])
    assert parse('citeseer') == 'CiteSeer'
    with pytest.raises(argparse.ArgumentTypeError, match='Cora, CiteSeer'):
        parse('Foo')


def test_existing_paths(tmp_path):
    file = tmp_path / 'f.txt'
    file.write_text('x')
    assert cli.existing_path(str(file)) == str(file)
    assert cli.existing_dir(str(tmp_path)) == str(tmp_path)
    with pytest.raises(argparse.ArgumentTypeError, match='does not exist'):
        cli.existing_path(str(tmp_path / 'missing'))
    with pytest.raises(argparse.ArgumentTypeError, match='existing folder'):
        cli.existing_dir(str(file))


def test_output_path_creates_missing_folder(tmp_path):
    target = tmp_path / 'a' / 'b' / 'rows.json'
    assert cli.output_path(str(target)) == str(target)
    assert target.parent.is_dir() and not target.exists()


def test_output_path_rejects_unwritable_targets(tmp_path):
    file = tmp_path / 'file'
    file.write_text('x')
    with pytest.raises(argparse.ArgumentTypeError, match='is a file'):
        cli.output_path(str(file / 'rows.json'))
    with pytest.raises(argparse.ArgumentTypeError, match='is a folder'):
        cli.output_path(str(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason='root may write anywhere')
def test_output_path_rejects_read_only_folder(tmp_path):
    folder = tmp_path / 'ro'
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(argparse.ArgumentTypeError,
                           match='permission denied'):
            cli.output_path(str(folder / 'rows.json'))
    finally:
        folder.chmod(0o700)


def test_plain_text_drops_sphinx_markup():
    doc = ('Swaps layers with :func:`quantize_model` under :class:`~a.QAT`, '
           'see ``deploy.save``.\n\n.. code-block:: bash\n\n    make demo\n')
    text = cli.plain_text(doc)
    assert text == 'Swaps layers with quantize_model under a.QAT, see ' \
        'deploy.save.'


def _parser():
    parser = cli.make_parser('A test script.')
    parser.add_argument('--epochs', type=cli.positive_int, default=1)
    return parser


def test_run_turns_user_errors_into_one_line(capsys):
    def main(args):
        with cli.user_input('--root'):
            raise FileNotFoundError(2, 'No such file or directory', '/x/y')

    assert cli.run(main, _parser(), [], exit=False) == 2
    err = capsys.readouterr().err
    assert err == "error: argument --root: No such file or directory: " \
        "'/x/y'\n"


def test_run_shows_traceback_when_debugging(monkeypatch):
    def main(args):
        with cli.user_input('--dataset'):
            raise ValueError('bad name')

    with pytest.raises(cli.UserError, match='argument --dataset: bad name'):
        cli.run(main, _parser(), ['--debug'], exit=False)
    monkeypatch.setenv(cli.DEBUG_ENV, '1')
    with pytest.raises(cli.UserError):
        cli.run(main, _parser(), [], exit=False)


def test_programming_errors_keep_their_traceback():
    def main(args):
        raise ValueError('a bug, not bad input')

    with pytest.raises(ValueError, match='a bug'):
        cli.run(main, _parser(), [], exit=False)


def test_parse_error_is_one_line_with_status_2(capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(['--epochs', '0'])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('error: argument --epochs')


def test_require_module(capsys):
    cli.require_module('json', '--json')
    with pytest.raises(cli.UserError, match='argument --plot: needs '
                       'no_such_module_xyz'):
        cli.require_module('no_such_module_xyz', '--plot', extra='plot')
