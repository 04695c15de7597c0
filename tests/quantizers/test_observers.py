"""Tests of the range observers (pyg_qgnn.quantizers.observers)."""
import pytest
import torch

from pyg_qgnn.quantizers import (
    MinMaxObserver,
    MomentumObserver,
    Observer,
    PercentileObserver,
    make_observer,
)

OBSERVER_NAMES = ['abs', 'mom', 'per']


# --------------------------------------------------------------------------
# make_observer
# --------------------------------------------------------------------------
@pytest.mark.parametrize('name,cls', [('abs', MinMaxObserver),
                                      ('mom', MomentumObserver),
                                      ('per', PercentileObserver)])
def test_make_observer_by_name(name, cls):
    assert type(make_observer(name)) is cls


def test_make_observer_passes_instances_through():
    obs = PercentileObserver(percentile=99.0)
    assert make_observer(obs) is obs


@pytest.mark.parametrize('name', ['xyz', 'ABS', '', None])
def test_make_observer_rejects_unknown_name(name):
    with pytest.raises(ValueError, match='observer'):
        make_observer(name)


# --------------------------------------------------------------------------
# MinMaxObserver
# --------------------------------------------------------------------------
def test_minmax_first_call_is_batch_extremes_per_row():
    obs = MinMaxObserver()
    assert not obs.initialized
    lo, hi = obs(torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.25, 4.0]]))
    assert obs.initialized
    assert lo.tolist() == [-2.0, 0.25]
    assert hi.tolist() == [3.0, 4.0]


def test_minmax_tracks_running_extremes_across_calls():
    obs = MinMaxObserver()
    obs(torch.tensor([[1.0, -2.0, 3.0]]))
    obs(torch.tensor([[0.0, 0.5, 1.0]]))  # inside: no change
    assert obs.min_val.tolist() == [-2.0]
    assert obs.max_val.tolist() == [3.0]
    obs(torch.tensor([[-5.0, 0.0, 2.0]]))  # new minimum only
    assert obs.min_val.tolist() == [-5.0]
    assert obs.max_val.tolist() == [3.0]
    obs(torch.tensor([[0.0, 10.0, 2.0]]))  # new maximum only
    assert obs.min_val.tolist() == [-5.0]
    assert obs.max_val.tolist() == [10.0]


def test_observer_restart_discards_history():
    obs = MinMaxObserver()
    obs(torch.tensor([[-7.0, 9.0]]))
    lo, hi = obs(torch.tensor([[-1.0, 2.0]]), restart=True)
    assert lo.tolist() == [-1.0] and hi.tolist() == [2.0]


def test_observer_row_count_change_restarts_statistics():
    obs = MinMaxObserver()
    obs(torch.tensor([[-7.0, 9.0], [1.0, 2.0]]))
    lo, hi = obs(torch.tensor([[-1.0, 2.0], [3.0, 4.0], [0.0, 0.5]]))
    assert lo.tolist() == [-1.0, 3.0, 0.0]
    assert hi.tolist() == [2.0, 4.0, 0.5]


def test_observer_reset_parameters_uninitializes():
    obs = MinMaxObserver()
    obs(torch.tensor([[1.0, 2.0]]))
    obs.reset_parameters()
    assert not obs.initialized
    assert obs.min_val.numel() == 0 and obs.max_val.numel() == 0


def test_observer_range_is_in_state_dict():
    obs = MomentumObserver()
    obs(torch.tensor([[1.0, -2.0]]))
    sd = obs.state_dict()
    assert set(sd) == {'min_val', 'max_val'}
    assert sd['min_val'].tolist() == [-2.0]
    assert sd['max_val'].tolist() == [1.0]


# --------------------------------------------------------------------------
# MomentumObserver
# --------------------------------------------------------------------------
@pytest.mark.parametrize('momentum', [0.1, 0.25, 1.0])
def test_momentum_observer_is_hand_computed_ema(momentum):
    batches = [
        torch.tensor([[-1.0, 2.0, 0.5], [0.0, 4.0, 1.0]]),
        torch.tensor([[-3.0, 1.0, 0.0], [2.0, 2.5, 3.0]]),
        torch.tensor([[0.5, 6.0, 1.0], [-1.0, 0.0, 8.0]]),
    ]
    obs = MomentumObserver(momentum=momentum)
    ref_lo = ref_hi = None
    for b in batches:
        b_lo = [min(row) for row in b.tolist()]
        b_hi = [max(row) for row in b.tolist()]
        if ref_lo is None:  # first call initializes
            ref_lo, ref_hi = b_lo, b_hi
        else:
            ref_lo = [r + momentum * (n - r) for r, n in zip(ref_lo, b_lo)]
            ref_hi = [r + momentum * (n - r) for r, n in zip(ref_hi, b_hi)]
        lo, hi = obs(b)
        assert lo.tolist() == pytest.approx(ref_lo, abs=1e-6)
        assert hi.tolist() == pytest.approx(ref_hi, abs=1e-6)


def test_momentum_observer_default_momentum_is_point_one():
    obs = MomentumObserver()
    obs(torch.tensor([[0.0, 10.0]]))
    _, hi = obs(torch.tensor([[0.0, 20.0]]))
    assert hi.item() == pytest.approx(11.0)


@pytest.mark.parametrize('momentum', [0.0, -0.1, 1.01, 2.0])
def test_momentum_out_of_range_raises(momentum):
    with pytest.raises(ValueError, match='momentum'):
        MomentumObserver(momentum=momentum)


@pytest.mark.parametrize('momentum', [0.0, 1.5])
def test_percentile_observer_momentum_out_of_range_raises(momentum):
    with pytest.raises(ValueError, match='momentum'):
        PercentileObserver(momentum=momentum)


# --------------------------------------------------------------------------
# PercentileObserver
# --------------------------------------------------------------------------
@pytest.mark.parametrize('percentile', [50.0, 10.0, 0.0, 100.5, 200.0])
def test_percentile_out_of_range_raises(percentile):
    with pytest.raises(ValueError, match='percentile'):
        PercentileObserver(percentile=percentile)


@pytest.mark.parametrize('sample_size', [0, -5])
def test_percentile_sample_size_must_be_positive(sample_size):
    with pytest.raises(ValueError, match='sample_size'):
        PercentileObserver(sample_size=sample_size)


def _bulk_with_outliers(n=2000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    bulk = torch.rand(n, generator=gen) * 2 - 1  # bulk in [-1, 1)
    x = torch.cat([bulk, torch.tensor([1e6, -1e6])])
    return bulk, x.reshape(1, -1)


def test_percentile_range_ignores_a_few_huge_outliers():
    bulk, x = _bulk_with_outliers()
    lo, hi = PercentileObserver(percentile=99.9)(x)
    q_hi = torch.quantile(bulk, 0.999).item()
    q_lo = torch.quantile(bulk, 0.001).item()
    # Near the bulk: inside [-1, 1] up to rounding, nowhere near +-1e6.
    assert 0.9 < hi.item() <= max(q_hi, bulk.max().item()) + 1e-6
    assert -0.9 > lo.item() >= min(q_lo, bulk.min().item()) - 1e-6


def test_minmax_range_includes_the_outliers():
    _, x = _bulk_with_outliers()
    lo, hi = MinMaxObserver()(x)
    assert hi.item() == 1e6 and lo.item() == -1e6


def test_percentile_exact_on_small_input_matches_torch_quantile():
    x = torch.arange(101, dtype=torch.float).reshape(1, -1)  # 0..100
    lo, hi = PercentileObserver(percentile=90.0)(x)
    assert lo.item() == pytest.approx(10.0)
    assert hi.item() == pytest.approx(90.0)


def test_percentile_observer_is_ema_of_batch_percentiles():
    obs = PercentileObserver(percentile=100.0, momentum=0.5)
    obs(torch.tensor([[0.0, 4.0]]))
    lo, hi = obs(torch.tensor([[-2.0, 8.0]]))
    assert lo.item() == pytest.approx(-1.0)  # 0 + 0.5 * (-2 - 0)
    assert hi.item() == pytest.approx(6.0)  # 4 + 0.5 * (8 - 4)


def test_percentile_sampling_honours_sample_size(monkeypatch):
    seen = []
    real_quantile = torch.quantile

    def spy(input, *args, **kwargs):
        seen.append(tuple(input.shape))
        return real_quantile(input, *args, **kwargs)

    monkeypatch.setattr(torch, 'quantile', spy)
    torch.manual_seed(0)
    x = torch.rand(3, 200_000) * 2 - 1  # bulk in [-1, 1]
    x[:, 7] = 1e9  # one huge outlier per row
    obs = PercentileObserver(percentile=99.0, sample_size=256)
    lo, hi = obs(x)
    assert seen and all(shape[-1] <= 256 for shape in seen)
    assert torch.isfinite(lo).all() and torch.isfinite(hi).all()
    # Sensible: close to the true 1st/99th percentiles (-0.98, 0.98).
    assert ((lo > -1.01) & (lo < -0.8)).all()
    assert ((hi < 1.01) & (hi > 0.8)).all()


# --------------------------------------------------------------------------
# Non-finite inputs
# --------------------------------------------------------------------------
@pytest.mark.parametrize('name', OBSERVER_NAMES)
@pytest.mark.parametrize('bad', [float('nan'), float('inf'), float('-inf')])
def test_observer_rejects_non_finite_small_input(name, bad):
    x = torch.tensor([[0.5, bad, -1.0, 2.0]])
    with pytest.raises(ValueError, match='NaN or Inf'):
        make_observer(name)(x)


@pytest.mark.parametrize('name', OBSERVER_NAMES)
@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_observer_rejects_single_non_finite_in_large_input(name, bad):
    # 100k entries: far more than the percentile observer's subsample.
    x = torch.randn(1, 100_000)
    x[0, 54_321] = bad
    obs = make_observer(name)
    assert isinstance(obs, Observer)
    with pytest.raises(ValueError, match='NaN or Inf'):
        obs(x)


@pytest.mark.parametrize('name', OBSERVER_NAMES)
def test_observer_state_unchanged_after_rejected_input(name):
    obs = make_observer(name)
    obs(torch.tensor([[-1.0, 1.0]]))
    with pytest.raises(ValueError):
        obs(torch.tensor([[float('nan'), 1.0]]))
    assert torch.isfinite(obs.min_val).all()
    assert torch.isfinite(obs.max_val).all()
