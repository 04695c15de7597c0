import random

import pytest
import torch

from pyg_qgnn.train import Summary, seed_everything, summarize


def test_summarize_is_mean_and_sample_std():
    s = summarize([0.8, 0.9, 1.0])
    assert s.mean == pytest.approx(0.9)
    assert s.std == pytest.approx(0.1)
    assert s.n == 3
    assert s.format() == '90.00 ± 10.00'
    assert summarize([0.5]) == Summary(0.5, 0.0, 1)


def test_summarize_rejects_empty():
    with pytest.raises(ValueError, match="'values'"):
        summarize([])


def test_seed_everything_repeats_draws():
    seed_everything(3)
    first = (random.random(), torch.rand(2))
    seed_everything(3)
    second = (random.random(), torch.rand(2))
    assert first[0] == second[0] and torch.equal(first[1], second[1])
