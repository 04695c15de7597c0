r"""The command-line convention shared by the demo, every example and every
benchmark.

A script builds its parser with :func:`make_parser`, gives each argument one
of the checking types below (so a bad value fails at parse time, before any
data is loaded), wraps the places where user input meets the library in
:func:`user_input`, and ends with :func:`run`::

    from pyg_qgnn import cli

    def main(args):
        with cli.user_input('--root'):
            graph = load_planetoid(args.dataset, args.root)
        ...

    if __name__ == '__main__':
        parser = cli.make_parser(__doc__)
        parser.add_argument('--epochs', type=cli.positive_int, default=200)
        parser.add_argument('--json', type=cli.output_path, metavar='PATH')
        cli.run(main, parser)

A user error (a bad argument, missing data, an unreadable checkpoint) ends the
script with exit status 2 and one line on stderr, ``error: ...``, naming the
argument. The traceback is shown only with ``--debug`` or when the
environment variable ``PYG_QGNN_DEBUG`` is set to a non-empty value other
than ``0``; programming errors always show it.
"""
import argparse
import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

#: Set to show tracebacks of user errors too.
DEBUG_ENV = 'PYG_QGNN_DEBUG'


class UserError(Exception):
    r"""An error the user can fix by changing the command line or the
    data; :func:`run` prints it as one line."""


# Argument types: each raises argparse.ArgumentTypeError, which argparse
# reports as "argument --name: <message>".

def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'expected an integer (got {text!r})') from None


def positive_int(text: str) -> int:
    r"""An integer :math:`\ge 1`."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(
            f'expected a positive integer (got {text!r})')
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    r"""An integer :math:`\ge` :obj:`low`."""
    def parse(text: str) -> int:
        value = _integer(text)
        if value < low:
            raise argparse.ArgumentTypeError(
                f'expected an integer >= {low} (got {text!r})')
        return value

    parse.__name__ = 'integer'
    return parse


def nonnegative_int(text: str) -> int:
    r"""An integer :math:`\ge 0`."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(
            f'expected an integer >= 0 (got {text!r})')
    return value


def positive_float(text: str) -> float:
    r"""A finite number :math:`> 0`."""
    try:
        value = float(text)
    except ValueError:
        value = float('nan')
    if not 0 < value < float('inf'):
        raise argparse.ArgumentTypeError(
            f'expected a positive number (got {text!r})')
    return value


def fraction(text: str) -> float:
    r"""A number in :math:`[0, 1]`."""
    try:
        value = float(text)
    except ValueError:
        value = float('nan')
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f'expected a number in [0, 1] (got {text!r})')
    return value


def share(text: str) -> float:
    r"""A share kept, in :math:`(0, 1]`."""
    value = fraction(text)
    if value == 0:
        raise argparse.ArgumentTypeError(
            f'expected a number in (0, 1] (got {text!r})')
    return value


def open_fraction(text: str) -> float:
    r"""A share strictly between 0 and 1 (e.g. pruned per run)."""
    value = share(text)
    if value == 1:
        raise argparse.ArgumentTypeError(
            f'expected a number in (0, 1) (got {text!r})')
    return value


def number_in(low: float, high: float) -> Callable[[str], float]:
    r"""A number in :math:`[low, high]`."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float('nan')
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f'expected a number in [{low:g}, {high:g}] (got {text!r})')
        return value

    parse.__name__ = 'number'
    return parse


def bit_width(text: str) -> int:
    r"""A bit width in :math:`1..8`."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 8:
        raise argparse.ArgumentTypeError(
            f'expected a bit width in 1..8 (got {text!r})')
    return value


def existing_path(text: str) -> str:
    r"""A file or folder that exists."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f'{text!r} does not exist')
    return text


def existing_dir(text: str) -> str:
    r"""A folder that exists."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(
            f'{text!r} is not an existing folder')
    return text


def output_path(text: str) -> str:
    r"""A file path that can be written. A missing parent folder is created;
    a parent that is a file, a path that is a folder, or one without write
    permission is an error, before any work starts."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f'{text!r} is a folder; expected a file path')
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise argparse.ArgumentTypeError(
            f'cannot write {text!r}: a part of {str(parent)!r} is a file, '
            f'not a folder') from None
    except OSError as e:
        raise argparse.ArgumentTypeError(
            f'cannot create the folder {str(parent)!r}: '
            f'{e.strerror or e}') from None
    target = path if path.exists() else parent
    if not os.access(target, os.W_OK):
        raise argparse.ArgumentTypeError(
            f'cannot write {text!r}: permission denied')
    return text


def choice(options: Sequence[str]) -> Callable[[str], str]:
    r"""A case-insensitive choice among :obj:`options`, returned in the
    spelling of :obj:`options`."""
    canonical = {option.lower(): option for option in options}

    def parse(text: str) -> str:
        try:
            return canonical[text.lower()]
        except KeyError:
            raise argparse.ArgumentTypeError(
                f'expected one of {", ".join(options)} (got {text!r})'
            ) from None

    parse.__name__ = 'choice'
    return parse


_ROLE = re.compile(r':[a-z]+:`~?([^`]+)`')


def plain_text(doc: Optional[str]) -> str:
    r"""A docstring as plain words for :obj:`--help`: Sphinx roles
    (``:func:`x```) and literal markup (````x````) are reduced to their text,
    and ``.. code-block::`` sections are dropped."""
    if not doc:
        return ''
    paragraphs, in_directive = [], False
    for paragraph in doc.strip().split('\n\n'):
        if paragraph.lstrip().startswith('.. '):
            in_directive = True  # drop the directive and its indented body
            continue
        if in_directive and paragraph.startswith('    '):
            continue
        in_directive = False
        paragraphs.append(paragraph)
    text = _ROLE.sub(r'\1', '\n\n'.join(paragraphs))
    return text.replace('``', '').replace(':math:', '')


class ArgumentParser(argparse.ArgumentParser):
    r"""An :class:`argparse.ArgumentParser` whose errors are one line,
    ``error: argument --name: ...``, with exit status 2."""
    def error(self, message: str):
        self.exit(2, f'error: {message} (see --help)\n')


def make_parser(doc: Optional[str] = None, **kwargs) -> ArgumentParser:
    r"""A parser whose description is :obj:`doc` in plain text, with the
    shared :obj:`--debug` flag."""
    kwargs.setdefault('formatter_class', argparse.RawDescriptionHelpFormatter)
    parser = ArgumentParser(description=plain_text(doc), **kwargs)
    add_debug_flag(parser)
    return parser


def add_debug_flag(parser: argparse.ArgumentParser):
    parser.add_argument(
        '--debug', action='store_true',
        help=f'show the full traceback of an error (also: {DEBUG_ENV}=1)')


def require_module(module: str, argument: str, extra: str = ''):
    r"""Raises a :class:`UserError` naming :obj:`argument` when the optional
    :obj:`module` it needs is not installed (call it before any work)."""
    import importlib.util
    if importlib.util.find_spec(module) is None:
        hint = f' (pip install "pyg_qgnn[{extra}]")' if extra else ''
        raise UserError(f'argument {argument}: needs {module}, which is not '
                        f'installed{hint}')


def add_output_arguments(parser: argparse.ArgumentParser,
                         plot: str = 'the results'):
    r"""``--json PATH``, ``--plot PATH`` (:obj:`plot` says of what) and
    ``--no-progress``, checked at parse time."""
    parser.add_argument('--json', type=output_path, metavar='PATH',
                        help='write the rows as a JSON list (a missing '
                        'folder is created)')
    parser.add_argument('--plot', type=output_path, metavar='PATH',
                        help=f'write a PNG of {plot} (needs matplotlib)')
    parser.add_argument('--no-progress', action='store_true',
                        help='hide progress bars')


@contextlib.contextmanager
def user_input(argument: Optional[str] = None) -> Iterator[None]:
    r"""Turns the :class:`ValueError`, :class:`TypeError` or
    :class:`OSError` raised inside the block (the library's answer to bad
    input) into a :class:`UserError` naming :obj:`argument`."""
    try:
        yield
    except UserError:
        raise
    except (ValueError, TypeError, OSError) as e:
        message = str(e) if not isinstance(e, OSError) or not e.filename \
            else f'{e.strerror or e}: {e.filename!r}'
        prefix = f'argument {argument}: ' if argument else ''
        raise UserError(prefix + message) from e


def _debugging(args: Any) -> bool:
    return bool(getattr(args, 'debug', False)) or \
        os.environ.get(DEBUG_ENV, '') not in ('', '0')


def run(main: Callable[[argparse.Namespace], Any],
        parser: argparse.ArgumentParser,
        argv: Optional[Sequence[str]] = None, exit: bool = True) -> int:
    r"""Parses :obj:`argv` and calls :obj:`main(args)` under :func:`guard`.
    Exits with the status unless :obj:`exit=False`, which returns it."""
    args = parser.parse_args(argv)
    status = guard(lambda: main(args), debug=_debugging(args))
    if exit:
        sys.exit(status)
    return status


def guard(call: Callable[[], Any], debug: Optional[bool] = None) -> int:
    r"""Calls :obj:`call()` and returns an exit status: :obj:`0`, or
    :obj:`2` after printing a :class:`UserError` as ``error: ...`` on
    stderr (re-raised when debugging: :obj:`debug`, ``--debug`` on the
    command line or ``$PYG_QGNN_DEBUG``), or :obj:`130` on Ctrl-C. Other
    exceptions propagate with their traceback."""
    if debug is None:
        debug = '--debug' in sys.argv[1:] or _debugging(None)
    try:
        call()
    except UserError as e:
        if debug:
            raise
        print(f'error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    return 0
