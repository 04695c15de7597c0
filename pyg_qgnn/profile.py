r"""What a call costs: time, memory, CPU and energy, measured with
`psutil <https://psutil.readthedocs.io>`_ and the RAPL counters of
:obj:`/sys/class/powercap`, as reported by `Khedri et al. (2025)
<https://arxiv.org/abs/2510.22058>`_ for compressed GNNs.

.. code-block:: python

    from pyg_qgnn.profile import measure_inference

    usage = measure_inference(model, data.x, data.edge_index, repeats=20)
    print(usage)   # time 3.1 ms (median of 20), peak RSS 412.0 MB, ...

Energy is read from the machine's RAPL counters (Intel and AMD package
domains) where they exist and are readable; elsewhere it is reported as
unavailable, with the reason, never estimated.
"""
import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import psutil
import torch
from torch import nn

POWERCAP = Path('/sys/class/powercap')


@dataclass
class ResourceUsage:
    r"""Costs of :obj:`repeats` calls (see :func:`measure`).

    Attributes:
        time_s: Median wall time of one call, in seconds.
        time_std_s: Standard deviation of the call times.
        repeats: Number of timed calls.
        peak_rss_bytes: Highest resident memory of the process during the
            calls (sampled every :obj:`interval` seconds and at both ends).
        rss_increase_bytes: :obj:`peak_rss_bytes` minus the resident memory
            before the first call: what the calls added.
        cpu_percent: CPU time of the process (user + system, all threads)
            over wall time, in percent: :obj:`100` is one busy core.
        energy_j: Energy per call in joules from RAPL, or :obj:`None`.
        energy_source: The RAPL domains read, or why energy is unavailable.
    """
    time_s: float
    time_std_s: float
    repeats: int
    peak_rss_bytes: int
    rss_increase_bytes: int
    cpu_percent: float
    energy_j: Optional[float]
    energy_source: str

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        energy = (f'{self.energy_j:.4g} J' if self.energy_j is not None
                  else 'energy unavailable')
        return (f'time {1e3 * self.time_s:.3g} ms (median of {self.repeats}), '
                f'peak RSS {self.peak_rss_bytes / 2**20:.1f} MB '
                f'(+{self.rss_increase_bytes / 2**20:.1f} MB), CPU '
                f'{self.cpu_percent:.0f}%, {energy}')


class Rapl:
    r"""The package-level RAPL energy counters under :obj:`root`.

    :attr:`available` says whether any could be read; :attr:`reason` why
    not. Counters wrap around at :obj:`max_energy_range_uj`, which
    :meth:`joules_since` accounts for (one wrap per interval at most: a
    package counter wraps after minutes).
    """
    def __init__(self, root: Path = POWERCAP):
        self.domains: List[Tuple[str, Path, int]] = []
        self.reason = ''
        if not root.is_dir():
            self.reason = f'unavailable: {root} does not exist'
            return
        for zone in sorted(root.glob('intel-rapl:*')) + \
                sorted(root.glob('amd-rapl:*')):
            if zone.name.count(':') != 1:
                continue  # a subdomain (core, dram): inside its package
            try:
                name = (zone / 'name').read_text().strip()
                wrap = int((zone / 'max_energy_range_uj').read_text())
                int((zone / 'energy_uj').read_text())
            except PermissionError:
                self.reason = (f'unavailable: {zone / "energy_uj"} is not '
                               f'readable (needs root)')
                continue
            except (OSError, ValueError):
                continue
            if name.startswith('package'):
                self.domains.append((name, zone / 'energy_uj', wrap))
        if self.domains:
            self.reason = 'RAPL ' + '+'.join(d[0] for d in self.domains)
        elif not self.reason:
            self.reason = f'unavailable: no readable RAPL package under {root}'

    @property
    def available(self) -> bool:
        return bool(self.domains)

    def read(self) -> List[int]:
        r"""The counters in microjoules."""
        return [int(path.read_text()) for _, path, _ in self.domains]

    def joules_since(self, start: List[int]) -> float:
        total = 0
        for (_, _, wrap), before, after in zip(self.domains, start,
                                               self.read()):
            total += after - before if after >= before else \
                after + wrap - before
        return total / 1e6


class _PeakRss:
    r"""Samples the resident memory of :obj:`process` on a thread."""
    def __init__(self, process: psutil.Process, interval: float):
        self.process, self.interval = process, interval
        self.peak = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def measure(fn: Callable[[], Any], repeats: int = 10, warmup: int = 1,
            interval: float = 0.001, rapl: Optional[Rapl] = None
            ) -> ResourceUsage:
    r"""Calls :obj:`fn()` :obj:`warmup` times untimed, then :obj:`repeats`
    times, and reports what the timed calls cost.

    Args:
        fn (callable): The work, e.g. one inference pass.
        repeats (int, optional): Timed calls, at least :obj:`1`.
            (default: :obj:`10`)
        warmup (int, optional): Untimed calls first (lazy initialization,
            caches). (default: :obj:`1`)
        interval (float, optional): Seconds between memory samples.
            (default: :obj:`0.001`)
        rapl (Rapl, optional): The energy counters to read.
            (default: those of this machine)
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or \
            repeats < 1:
        raise ValueError(f"'repeats' must be a positive integer "
                         f"(got {repeats!r})")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"'warmup' must be an integer >= 0 (got {warmup!r})")
    if not interval > 0:
        raise ValueError(f"'interval' must be a positive number of seconds "
                         f"(got {interval!r})")
    rapl = Rapl() if rapl is None else rapl
    for _ in range(warmup):
        fn()
    process = psutil.Process(os.getpid())
    times = []
    with _PeakRss(process, interval) as memory:
        before_rss = process.memory_info().rss
        cpu_before = process.cpu_times()
        energy_before = rapl.read() if rapl.available else None
        start = time.perf_counter()
        for _ in range(repeats):
            tick = time.perf_counter()
            fn()
            times.append(time.perf_counter() - tick)
        wall = time.perf_counter() - start
        cpu_after = process.cpu_times()
        energy = (rapl.joules_since(energy_before) / repeats
                  if energy_before is not None else None)
    cpu = (cpu_after.user - cpu_before.user) + \
        (cpu_after.system - cpu_before.system)
    return ResourceUsage(
        time_s=statistics.median(times),
        time_std_s=statistics.stdev(times) if repeats > 1 else 0.0,
        repeats=repeats, peak_rss_bytes=memory.peak,
        rss_increase_bytes=max(memory.peak - before_rss, 0),
        cpu_percent=100.0 * cpu / max(wall, 1e-9), energy_j=energy,
        energy_source=rapl.reason)


def measure_inference(model: nn.Module, *inputs, repeats: int = 10,
                      warmup: int = 1, **kwargs) -> ResourceUsage:
    r""":func:`measure` of :obj:`model(*inputs, **kwargs)` in evaluation
    mode under :func:`torch.inference_mode` (the model's mode is restored
    after)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"'model' must be a torch.nn.Module "
                        f"(got {type(model).__name__})")
    was_training = model.training
    model.eval()

    def call():
        with torch.inference_mode():
            model(*inputs, **kwargs)

    try:
        return measure(call, repeats, warmup)
    finally:
        model.train(was_training)
