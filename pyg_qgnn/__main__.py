r"""Command line: ``python -m pyg_qgnn demo`` (also ``pyg-qgnn demo``)."""
import sys
from typing import Optional, Sequence

from pyg_qgnn import cli, demo


def build_parser() -> cli.ArgumentParser:
    parser = cli.make_parser(
        'Quantized graph neural networks for PyTorch Geometric.',
        prog='pyg-qgnn')
    commands = parser.add_subparsers(dest='command', required=True,
                                     metavar='COMMAND')
    demo_parser = commands.add_parser(
        'demo', help='float GCN vs. QAT INT8/INT4 on a Planetoid graph',
        description=cli.plain_text(demo.__doc__),
        epilog='\n\n'.join(cli.plain_text(section.__doc__)
                           for section in demo.SECTIONS.values()),
        formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    cli.add_debug_flag(demo_parser)
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(handler=demo.main)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(lambda args: args.handler(args), build_parser(), argv,
                   exit=False)


if __name__ == '__main__':
    sys.exit(main())
