r"""The quantization methods the examples compare, as one spec each:
:obj:`"fp32"` (no quantization), :obj:`"qat"`, :obj:`"dq"` (Degree-Quant)
and :obj:`"a2q"`, at a bit width."""
from dataclasses import dataclass
from typing import Optional

from torch import nn

from pyg_qgnn.quantize import A2Q, QAT, DegreeQuant, QuantScheme
from pyg_qgnn.selection import Admissible
from pyg_qgnn.train.node import Penalty

METHODS = ('fp32', 'qat', 'dq', 'a2q')
LABELS = {'fp32': 'FP32', 'qat': 'QAT', 'dq': 'DQ', 'a2q': 'A²Q'}


@dataclass(frozen=True)
class Method:
    r"""One row of a comparison.

    Args:
        name (str): One of :obj:`METHODS`.
        bits (int): Bit width (A²Q: the initial width of node features and
            the weights' width); :obj:`32` for :obj:`"fp32"`.
        observer (str, optional): Range observer of QAT and DQ.
            (default: :obj:`"per"`)
        grad (str, optional): :obj:`"ste"` or :obj:`"clipped"`.
            (default: :obj:`"ste"`)
        a2q_target (float, optional): A²Q's target average bit width.
            (default: :obj:`None`)
        a2q_groups (int, optional): A²Q's pool of per-node parameters for
            graphs not seen in training. (default: :obj:`None`)
        quant_lr (float, optional): Learning rate of learned quantizer
            parameters (A²Q's log-steps and bit widths; the A²Q reference
            trains bit widths at 0.1). (default: :obj:`0.1`)
    """
    name: str
    bits: int = 32
    observer: str = 'per'
    grad: str = 'ste'
    a2q_target: Optional[float] = None
    a2q_groups: Optional[int] = None
    quant_lr: float = 0.1

    def __post_init__(self):
        if self.name not in METHODS:
            raise ValueError(f"'method' must be one of {METHODS} "
                             f"(got {self.name!r})")

    @property
    def label(self) -> str:
        return LABELS[self.name]

    def scheme(self) -> Optional[QuantScheme]:
        r"""The :class:`QuantScheme` to quantize a trained float model with,
        or :obj:`None` for :obj:`"fp32"`."""
        if self.name == 'qat':
            return QAT(self.bits, observer=self.observer, grad=self.grad)
        if self.name == 'dq':
            return DegreeQuant(self.bits, observer=self.observer,
                               grad=self.grad)
        if self.name == 'a2q':
            return A2Q(init_bits=self.bits, target_avg_bits=self.a2q_target,
                       num_groups=self.a2q_groups)
        return None

    @staticmethod
    def penalty(scheme: Optional[QuantScheme]) -> Optional[Penalty]:
        r"""The loss term a scheme adds to training (A²Q's memory
        penalty), or :obj:`None`."""
        if isinstance(scheme, A2Q) and scheme.target_avg_bits is not None:
            return scheme.memory_penalty
        return None

    @staticmethod
    def admissible(scheme: Optional[QuantScheme]) -> Optional[Admissible]:
        r"""Which epochs may be selected: for A²Q with a target, those whose
        average bit width is within it (the target is a memory budget, and
        validation accuracy alone would pick an early epoch that still has
        the initial bit widths); else any."""
        if not isinstance(scheme, A2Q) or scheme.target_avg_bits is None:
            return None
        budget = scheme.target_avg_bits + 1e-6
        return lambda model: float(scheme.average_bits(model).detach()) <= \
            budget

    def average_bits(self, model: nn.Module,
                     scheme: Optional[QuantScheme]) -> float:
        r"""The average bit width of :obj:`model`'s node features in its
        last forward pass (A²Q), else the fixed width."""
        if isinstance(scheme, A2Q):
            return float(scheme.average_bits(model).detach())
        return float(self.bits)


def add_method_arguments(parser, a2q_target: Optional[float] = 2.5):
    r"""The flags that choose and tune the compared methods (``--method``,
    ``--bits``, ``--observer``, ``--grad``, ``--quant-lr``,
    ``--a2q-target``, learning rates), shared by the examples; read them
    back with :func:`methods_from_args`."""
    from pyg_qgnn import cli

    parser.add_argument('--method', nargs='+', default=list(METHODS),
                        type=cli.choice(list(METHODS)),
                        help='methods to compare; FP32 always runs, as the '
                        'start of the others (default: all)')
    parser.add_argument('--bits', nargs='+', type=cli.bit_width,
                        default=[8, 4],
                        help='bit widths, each in 1..8; A²Q starts at each '
                        '(default: 8 4)')
    parser.add_argument('--lr', type=cli.positive_float, default=0.01,
                        help='float learning rate (default: 0.01)')
    parser.add_argument('--finetune-lr', type=cli.positive_float,
                        default=0.005,
                        help='fine-tuning learning rate (default: 0.005)')
    parser.add_argument('--quant-lr', type=cli.positive_float, default=0.1,
                        help='learning rate of A²Q log-steps and bit widths '
                        '(default: 0.1)')
    parser.add_argument('--observer', choices=['abs', 'mom', 'per'],
                        default='per',
                        help='QAT/DQ range observer (default: per)')
    parser.add_argument('--grad', choices=['ste', 'clipped'], default='ste',
                        help='QAT/DQ gradient: straight-through or clipped '
                        '(the compression study\'s "gc") (default: ste)')
    parser.add_argument('--a2q-target', type=cli.number_in(1, 8),
                        default=a2q_target,
                        help=f'average bit width A²Q\'s memory penalty pulls '
                        f'towards (default: {a2q_target or "none, no penalty"})')


def methods_from_args(args, a2q_groups: Optional[int] = None) -> list:
    r"""FP32, then every quantized method of :obj:`args.method` at each of
    :obj:`args.bits`, as :class:`Method` rows."""
    return [Method('fp32')] + [
        Method(name, bits, args.observer, args.grad,
               a2q_target=args.a2q_target, a2q_groups=a2q_groups,
               quant_lr=args.quant_lr)
        for name in args.method if name != 'fp32' for bits in args.bits]
