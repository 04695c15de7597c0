r"""Command line: ``python -m pyg_qgnn demo`` (also ``pyg-qgnn demo``)."""
import argparse
import sys
from typing import Optional, Sequence

from pyg_qgnn import demo


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='pyg-qgnn',
        description='Quantized graph neural networks for PyTorch Geometric.')
    commands = parser.add_subparsers(dest='command', required=True)
    demo_parser = commands.add_parser(
        'demo', help='float GCN vs. QAT INT8/INT4 on a Planetoid graph',
        description=demo.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_arguments(demo_parser)
    args = parser.parse_args(argv)
    if args.command == 'demo':
        demo.main(args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
