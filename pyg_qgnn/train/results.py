r"""Seeds and mean ± std summaries."""
import random
import statistics
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


def seed_everything(seed: int):
    r"""Seeds Python, NumPy and PyTorch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Summary:
    r"""Mean and sample standard deviation of repeated measurements."""
    mean: float
    std: float
    n: int

    def format(self, scale: float = 100.0, digits: int = 2) -> str:
        return (f'{scale * self.mean:.{digits}f} ± '
                f'{scale * self.std:.{digits}f}')


def summarize(values: Sequence[float]) -> Summary:
    r"""The :class:`Summary` of :obj:`values` (std :obj:`0` for one)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("'values' is empty: nothing to summarize")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Summary(statistics.mean(values), std, len(values))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    r"""A markdown table: the first column left-aligned, the others
    right-aligned; integers with thousands separators."""
    lines = ['| ' + ' | '.join(header) + ' |',
             '|---|' + '---:|' * (len(header) - 1)]
    for row in rows:
        lines.append('| ' + ' | '.join(
            f'{c:,}' if isinstance(c, int) else str(c) for c in row) + ' |')
    return '\n'.join(lines)
