import mmap
import time

import pytest
import torch

from pyg_qgnn.profile import Rapl, ResourceUsage, measure, measure_inference


def fake_powercap(root, energy=0, wrap=10**9):
    package = root / 'intel-rapl:0'
    package.mkdir(parents=True)
    (package / 'name').write_text('package-0\n')
    (package / 'max_energy_range_uj').write_text(f'{wrap}\n')
    (package / 'energy_uj').write_text(f'{energy}\n')
    core = root / 'intel-rapl:0:0'  # a subdomain: inside the package
    core.mkdir()
    (core / 'name').write_text('core\n')
    (core / 'max_energy_range_uj').write_text(f'{wrap}\n')
    (core / 'energy_uj').write_text('0\n')
    return package / 'energy_uj'


def test_counts_calls_and_takes_the_median():
    calls = []
    usage = measure(lambda: (calls.append(1), time.sleep(0.01)), repeats=5,
                    warmup=2)
    assert len(calls) == 7 and usage.repeats == 5
    assert 0.009 <= usage.time_s < 0.2
    assert usage.time_std_s >= 0


def test_cpu_share_of_busy_and_idle_work():
    def busy():  # 30 ms of CPU, however long the machine makes it take
        end = time.process_time() + 0.03
        while time.process_time() < end:
            pass
    busy_share = measure(busy, repeats=3).cpu_percent
    idle_share = measure(lambda: time.sleep(0.03), repeats=3).cpu_percent
    assert idle_share < 30 and busy_share > idle_share


def test_peak_memory_sees_a_temporary_allocation():
    def allocate():
        # Fresh pages from the kernel, touched: a malloc could be served
        # from memory the process already holds after a long test session.
        block = mmap.mmap(-1, 64 * 2**20)
        for offset in range(0, len(block), mmap.PAGESIZE):
            block[offset] = 1
        time.sleep(0.02)
        block.close()
    usage = measure(allocate, repeats=2, warmup=0)
    assert usage.rss_increase_bytes >= 40 * 2**20
    assert usage.peak_rss_bytes >= usage.rss_increase_bytes


def test_energy_is_read_from_rapl_counters(tmp_path):
    counter = fake_powercap(tmp_path)
    rapl = Rapl(tmp_path)
    assert rapl.available and rapl.reason == 'RAPL package-0'

    def work():  # 2 J per call
        counter.write_text(str(int(counter.read_text()) + 2_000_000))
    usage = measure(work, repeats=4, warmup=0, rapl=rapl)
    assert usage.energy_j == pytest.approx(2.0)
    assert usage.energy_source == 'RAPL package-0'


def test_counter_wraparound(tmp_path):
    counter = fake_powercap(tmp_path, energy=9_000_000, wrap=10_000_000)
    rapl = Rapl(tmp_path)
    start = rapl.read()
    counter.write_text('500000')  # wrapped: 1 J + 0.5 J
    assert rapl.joules_since(start) == pytest.approx(1.5)


def test_energy_unavailable_is_reported_not_estimated(tmp_path):
    missing = Rapl(tmp_path / 'nothing')
    assert not missing.available and 'does not exist' in missing.reason
    (tmp_path / 'empty').mkdir()
    usage = measure(lambda: None, repeats=2, rapl=Rapl(tmp_path / 'empty'))
    assert usage.energy_j is None
    assert usage.energy_source.startswith('unavailable: no readable RAPL')
    assert 'energy unavailable' in str(usage)


@pytest.mark.parametrize('kwargs,match', [
    (dict(repeats=0), "'repeats' must be a positive integer"),
    (dict(repeats=1.5), "'repeats'"),
    (dict(warmup=-1), "'warmup' must be an integer >= 0"),
    (dict(interval=0), "'interval' must be a positive number"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure(lambda: None, **kwargs)


def test_measure_inference_restores_the_mode():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout())
    model.train()
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(
        (m.training, torch.is_inference_mode_enabled())))
    usage = measure_inference(model, torch.randn(3, 4), repeats=3)
    assert isinstance(usage, ResourceUsage) and model.training
    assert seen == [(False, True)] * 4  # warmup + 3, eval, inference mode
    assert set(usage.to_dict()) >= {'time_s', 'peak_rss_bytes',
                                    'cpu_percent', 'energy_j'}
    with pytest.raises(TypeError, match="'model'"):
        measure_inference(lambda x: x, torch.zeros(1))
