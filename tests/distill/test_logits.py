"""Tests of logit matching against its definition."""
import math

import pytest
import torch

from pyg_qgnn.distill import LogitMatching, distillation_loss, \
    logit_matching_loss


def ref_kd(student, teacher, temperature):
    r"""T^2/B sum_b sum_c p_t log(p_t / p_s), with softmax at T, in float64
    Python loops."""
    total = 0.0
    for s_row, t_row in zip(student.double().tolist(),
                            teacher.double().tolist()):
        zs = [v / temperature for v in s_row]
        zt = [v / temperature for v in t_row]
        ns = math.log(sum(math.exp(v) for v in zs))
        nt = math.log(sum(math.exp(v) for v in zt))
        for a, b in zip(zs, zt):
            log_ps, log_pt = a - ns, b - nt
            total += math.exp(log_pt) * (log_pt - log_ps)
    return temperature**2 * total / len(student)


@pytest.mark.parametrize('temperature', [1.0, 3.0, 7.5])
def test_logit_matching_matches_definition(temperature):
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 5), torch.randn(6, 5) * 2
    loss = logit_matching_loss(student, teacher, temperature)
    assert float(loss) == pytest.approx(ref_kd(student, teacher,
                                               temperature), rel=1e-5)
    assert float(logit_matching_loss(teacher, teacher)) == pytest.approx(
        0.0, abs=1e-6)


def test_logit_matching_gradient_is_softmax_difference():
    torch.manual_seed(0)
    temperature = 3.0
    student = torch.randn(4, 7, requires_grad=True)
    teacher = torch.randn(4, 7)
    logit_matching_loss(student, teacher, temperature).backward()
    # d/dz_s [T^2/B KL(p_t || p_s)] = T/B (p_s - p_t)
    ref = temperature / 4 * (torch.softmax(student.detach() / temperature, -1)
                             - torch.softmax(teacher / temperature, -1))
    assert torch.allclose(student.grad, ref, atol=1e-6)


def test_distillation_loss_combines_cross_entropy_and_kd():
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 4), torch.randn(6, 4)
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    ce = torch.nn.functional.cross_entropy(student, target)
    kd = logit_matching_loss(student, teacher, 3.0)
    loss = distillation_loss(student, teacher, target)  # paper: T=3, α=0.1
    assert torch.allclose(loss, 0.9 * ce + 0.1 * kd)
    module = LogitMatching()
    assert torch.allclose(module(student, teacher, target), loss)
    assert torch.allclose(module(student, teacher), kd)
    assert repr(module) == 'LogitMatching(temperature=3.0, alpha=0.1)'


def test_bad_arguments_name_the_argument():
    s, t = torch.randn(2, 3), torch.randn(2, 3)
    with pytest.raises(ValueError, match="'temperature'"):
        logit_matching_loss(s, t, 0.0)
    with pytest.raises(ValueError, match="'alpha'"):
        LogitMatching(alpha=1.5)
    with pytest.raises(ValueError, match="'student_logits' and "
                       "'teacher_logits'"):
        logit_matching_loss(s, torch.randn(2, 4))
