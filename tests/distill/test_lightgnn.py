"""Tests of LightGNN's distillation losses (Eq. 5, 6, 8, 9, 10) against
references written from the paper's equations with loops in float64."""
import math
import statistics

import pytest
import torch

from pyg_qgnn.distill.lightgnn import (
    embedding_kd_loss,
    importance_scores,
    mask_positive_sets,
    prediction_kd_loss,
    triple_margins,
    uniformity_loss,
)

# References ##################################################################


def sigma(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def ref_pred_kd(student, teacher, tau):
    r"""Eq. 5, averaged over the triples: -(sigma(e^t/tau) log
    sigma(e^s/tau) + (1 - sigma(e^t/tau)) log(1 - sigma(e^s/tau)))."""
    total = 0.0
    for s, t in zip(student.double().tolist(), teacher.double().tolist()):
        ps, pt = sigma(s / tau), sigma(t / tau)
        total += -(pt * math.log(ps) + (1 - pt) * math.log(1 - ps))
    return total / len(student)


def cos(a, b):
    return torch.dot(a, b) / (a.norm() * b.norm())


def ref_emb_kd(student, teacher, anchors, candidates, tau):
    r"""Eq. 6 anchor by anchor: -log(exp(s_ii / tau) / sum_i' exp(s_i'i /
    tau)), s_i'i = cos(e^s_i', e^t_i); the i' range over all nodes, or over
    the drawn :obj:`candidates` (each draw counted) plus the anchor once.
    Differentiable in both inputs (torch float64 scalars)."""
    student, teacher = student.double(), teacher.double()
    total = 0.0
    for i in anchors.tolist():
        positive = torch.exp(cos(student[i], teacher[i]) / tau)
        if candidates is None:  # Eq. 6 as printed: the anchor is among i'
            others = range(student.size(0))
            denominator = 0.0
        else:
            others = [c for c in candidates.tolist() if c != i]
            denominator = positive
        for c in others:
            denominator = denominator + torch.exp(
                cos(student[c], teacher[i]) / tau)
        total = total - torch.log(positive / denominator)
    return total / anchors.numel()


def l0(vector) -> int:
    return sum(1 for v in vector if v)


def ref_positive(mask_a, mask_c, delta) -> bool:
    r"""Eq. 10: ||e_a * e_c||_0 >= max(||e_a||_0, ||e_c||_0) - delta."""
    shared = l0([x and y for x, y in zip(mask_a, mask_c)])
    return shared >= max(l0(mask_a), l0(mask_c)) - delta


def ref_uniformity(emb, masks, anchors, delta, candidates, tau):
    r"""Eq. 9 anchor by anchor with S_i from Eq. 10 by loops over the mask
    rows: -log(sum_{i1 in S_i} exp(e_i1 e_i / tau) / sum_i2 exp(e_i e_i2 /
    tau)); over all nodes, or over the drawn :obj:`candidates` plus the
    anchor once."""
    emb = emb.double()
    rows = masks.tolist()
    total = 0.0
    for i in anchors.tolist():
        if candidates is None:
            ranged = list(range(emb.size(0)))
        else:
            ranged = [i] + [c for c in candidates.tolist() if c != i]
        numerator = denominator = 0.0
        for c in ranged:
            term = torch.exp(torch.dot(emb[i], emb[c]) / tau)
            denominator = denominator + term
            if ref_positive(rows[i], rows[c], delta):
                numerator = numerator + term
        total = total - torch.log(numerator / denominator)
    return total / anchors.numel()


# Inputs ######################################################################

N, D = 9, 6


def embeddings(seed, dtype=torch.float64, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(N, D, generator=gen) * scale).to(dtype)


def random_masks(seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(N, D, generator=gen) < 0.6


ANCHORS = torch.tensor([0, 3, 5, 8])
CANDIDATE_SETS = {
    'with anchors': torch.tensor([0, 1, 3, 4, 5, 8]),
    'anchor drawn twice': torch.tensor([3, 3, 0, 2, 3, 7]),
    'duplicates': torch.tensor([1, 1, 1, 2, 6, 6]),
    'without anchors': torch.tensor([1, 2, 4, 6, 7]),
}

# Eq. 5 #######################################################################


def test_triple_margins_by_loop():
    emb = embeddings(0)
    num_users = 4
    triples = torch.tensor([[0, 3, 1], [2, 0, 4], [1, 1, 0]])
    got = triple_margins(emb, triples, num_users)
    for b, (u, j1, j2) in enumerate(triples.t().tolist()):
        want = (torch.dot(emb[u], emb[num_users + j1]) -
                torch.dot(emb[u], emb[num_users + j2]))
        assert float(got[b]) == pytest.approx(float(want), rel=1e-12)


@pytest.mark.parametrize('tau', [0.03, 0.5, 2.0])
def test_prediction_kd_is_eq_5(tau):
    gen = torch.Generator().manual_seed(1)
    scale = 0.1 if tau == 0.03 else 1.0  # keeps sigma away from 0 and 1
    student = torch.randn(12, generator=gen, dtype=torch.float64) * scale
    teacher = torch.randn(12, generator=gen, dtype=torch.float64) * scale
    got = prediction_kd_loss(student, teacher, tau)
    assert float(got) == pytest.approx(ref_pred_kd(student, teacher, tau),
                                       rel=1e-10)
    # float32 inputs give the same value to float32 precision
    got32 = prediction_kd_loss(student.float(), teacher.float(), tau)
    assert float(got32) == pytest.approx(float(got), rel=1e-5)


def test_prediction_kd_default_temperature_is_0_03():
    student = torch.tensor([0.02, -0.05, 0.1], dtype=torch.float64)
    teacher = torch.tensor([-0.03, 0.01, 0.04], dtype=torch.float64)
    assert float(prediction_kd_loss(student, teacher)) == pytest.approx(
        ref_pred_kd(student, teacher, 0.03), rel=1e-10)


def test_prediction_kd_gradient_reaches_the_student_only():
    tau = 0.5
    student = torch.tensor([0.3, -1.2, 0.8, 0.0], dtype=torch.float64,
                           requires_grad=True)
    teacher = torch.tensor([1.0, 0.4, -0.6, 0.2], dtype=torch.float64,
                           requires_grad=True)
    prediction_kd_loss(student, teacher, tau).backward()
    # d/de^s of the mean BCE = (sigma(e^s/tau) - sigma(e^t/tau)) / (tau B)
    want = [(sigma(s / tau) - sigma(t / tau)) / (tau * 4)
            for s, t in zip(student.tolist(), teacher.tolist())]
    assert student.grad.tolist() == pytest.approx(want, rel=1e-10)
    assert teacher.grad is None
    # the loss is minimal (zero gradient) where the student matches
    same = teacher.detach().clone().requires_grad_()
    prediction_kd_loss(same, teacher.detach(), tau).backward()
    assert same.grad.abs().max() < 1e-15


# Eq. 6 #######################################################################


@pytest.mark.parametrize('tau', [0.1, 1.0])
def test_embedding_kd_over_all_nodes_is_eq_6(tau):
    student, teacher = embeddings(2), embeddings(3)
    got = embedding_kd_loss(student, teacher, ANCHORS, temperature=tau)
    want = ref_emb_kd(student, teacher, ANCHORS, None, tau)
    assert float(got) == pytest.approx(float(want), rel=1e-10)
    # all nodes given explicitly as candidates: the same sum
    explicit = embedding_kd_loss(student, teacher, ANCHORS, torch.arange(N),
                                 temperature=tau)
    assert float(explicit) == pytest.approx(float(want), rel=1e-10)


def test_embedding_kd_default_temperature_is_0_1():
    student, teacher = embeddings(2), embeddings(3)
    assert float(embedding_kd_loss(student, teacher, ANCHORS)) == \
        pytest.approx(float(ref_emb_kd(student, teacher, ANCHORS, None,
                                       0.1)), rel=1e-10)


@pytest.mark.parametrize('name', list(CANDIDATE_SETS))
def test_embedding_kd_with_sampled_candidates(name):
    candidates = CANDIDATE_SETS[name]
    student, teacher = embeddings(4), embeddings(5)
    got = embedding_kd_loss(student, teacher, ANCHORS, candidates, 0.2)
    want = ref_emb_kd(student, teacher, ANCHORS, candidates, 0.2)
    assert float(got) == pytest.approx(float(want), rel=1e-10)


def test_embedding_kd_counts_the_anchor_exactly_once():
    student, teacher = embeddings(6), embeddings(7)
    anchor = torch.tensor([2])

    def loss(candidates):
        return float(embedding_kd_loss(student, teacher, anchor,
                                       torch.tensor(candidates), 0.3))

    base = loss([5])
    assert loss([2, 5]) == pytest.approx(base, rel=1e-12)
    assert loss([2, 2, 2, 5]) == pytest.approx(base, rel=1e-12)
    assert loss([5, 2]) == pytest.approx(base, rel=1e-12)
    # by hand: -log(e^a / (e^a + e^b)), a = s_22 / tau, b = s_52 / tau
    a = float(cos(student[2], teacher[2])) / 0.3
    b = float(cos(student[5], teacher[2])) / 0.3
    assert base == pytest.approx(math.log1p(math.exp(b - a)), rel=1e-12)
    # another node's draws each count (sampling with replacement)
    assert loss([5, 5]) == pytest.approx(math.log1p(2 * math.exp(b - a)),
                                         rel=1e-12)


def test_embedding_kd_uses_cosine_similarity():
    student, teacher = embeddings(8), embeddings(9)
    scale = torch.linspace(0.2, 5.0, N, dtype=torch.float64).view(-1, 1)
    base = embedding_kd_loss(student, teacher, ANCHORS)
    scaled = embedding_kd_loss(student * scale, teacher * scale.flip(0),
                               ANCHORS)
    assert float(scaled) == pytest.approx(float(base), rel=1e-10)


def test_embedding_kd_gradients_reach_the_student_not_the_teacher():
    student = embeddings(10).requires_grad_()
    teacher = embeddings(11).requires_grad_()
    candidates = CANDIDATE_SETS['anchor drawn twice']
    embedding_kd_loss(student, teacher, ANCHORS, candidates, 0.2).backward()
    assert teacher.grad is None
    ref_student = student.detach().clone().requires_grad_()
    ref_emb_kd(ref_student, teacher.detach(), ANCHORS, candidates,
               0.2).backward()
    assert torch.allclose(student.grad, ref_student.grad, rtol=1e-9,
                          atol=1e-12)
    # only drawn candidates and anchors get a gradient
    touched = set(candidates.tolist()) | set(ANCHORS.tolist())
    for node in range(N):
        norm = float(student.grad[node].norm())
        assert (norm > 0) == (node in touched), node


def test_embedding_kd_float32_matches_reference():
    student, teacher = embeddings(12, torch.float32), embeddings(13,
                                                                 torch.float32)
    got = embedding_kd_loss(student, teacher, ANCHORS, temperature=0.1)
    want = ref_emb_kd(student, teacher, ANCHORS, None, 0.1)
    assert float(got) == pytest.approx(float(want), rel=1e-5)


# Eq. 10 ######################################################################

MASKS_A = torch.tensor([[1, 1, 0, 0],
                        [1, 1, 1, 0],
                        [0, 0, 0, 0]], dtype=torch.bool)
MASKS_C = torch.tensor([[1, 1, 0, 0],
                        [1, 0, 0, 0],
                        [0, 0, 1, 1],
                        [1, 1, 1, 1]], dtype=torch.bool)


def test_mask_positive_sets_by_hand():
    # ||a*c||_0 >= max(||a||_0, ||c||_0) - delta, worked out by hand:
    # row 0 (l0 2) shares 2, 1, 0, 2 with c (l0 2, 1, 2, 4)
    # row 1 (l0 3) shares 2, 1, 1, 3; row 2 (l0 0) shares nothing.
    exact = [[True, False, False, False],
             [False, False, False, False],
             [False, False, False, False]]
    relaxed = [[True, True, False, False],
               [True, False, False, True],
               [False, True, False, False]]
    assert mask_positive_sets(MASKS_A, MASKS_C, 0).tolist() == exact
    assert mask_positive_sets(MASKS_A, MASKS_C, 1).tolist() == relaxed
    # the same from 0/1 integer masks
    assert mask_positive_sets(MASKS_A.long(), MASKS_C.long(),
                              1).tolist() == relaxed
    # a node is always in its own positive set
    both = torch.cat([MASKS_A, MASKS_C])
    assert mask_positive_sets(both, both, 0).diagonal().all()


@pytest.mark.parametrize('delta', [0, 1, 2, 3])
def test_mask_positive_sets_match_eq_10_loops(delta):
    masks = random_masks(14)
    got = mask_positive_sets(masks[:4], masks, delta)
    want = [[ref_positive(a, c, delta) for c in masks.tolist()]
            for a in masks[:4].tolist()]
    assert got.tolist() == want


@pytest.mark.parametrize('delta', [-1, 1.0, 0.5, True, None, '1'])
def test_mask_positive_sets_rejects_bad_delta(delta):
    with pytest.raises(ValueError, match="'delta'"):
        mask_positive_sets(MASKS_A, MASKS_C, delta)


# Eq. 9 #######################################################################


@pytest.mark.parametrize('delta', [0, 1, 2])
@pytest.mark.parametrize('tau', [0.5, 1.0])
def test_uniformity_over_all_nodes_is_eq_9(delta, tau):
    emb, masks = embeddings(15, scale=0.7), random_masks(16)
    positive = mask_positive_sets(masks[ANCHORS], masks, delta)
    if delta == 1:  # the example holds other positives and negatives
        assert positive.sum(1).gt(1).any() and not positive.all()
    got = uniformity_loss(emb, masks, ANCHORS, delta, temperature=tau)
    want = ref_uniformity(emb, masks, ANCHORS, delta, None, tau)
    assert float(got) == pytest.approx(float(want), rel=1e-10)


def test_uniformity_default_temperature_is_1():
    emb, masks = embeddings(15, scale=0.7), random_masks(16)
    assert float(uniformity_loss(emb, masks, ANCHORS, 1)) == pytest.approx(
        float(ref_uniformity(emb, masks, ANCHORS, 1, None, 1.0)), rel=1e-10)


@pytest.mark.parametrize('name', list(CANDIDATE_SETS))
def test_uniformity_with_sampled_candidates(name):
    candidates = CANDIDATE_SETS[name]
    emb, masks = embeddings(17, scale=0.7), random_masks(18)
    got = uniformity_loss(emb, masks, ANCHORS, 1, candidates, 0.5)
    want = ref_uniformity(emb, masks, ANCHORS, 1, candidates, 0.5)
    assert float(got) == pytest.approx(float(want), rel=1e-10)


def test_uniformity_counts_the_anchor_exactly_once():
    emb, masks = embeddings(19), random_masks(20)
    anchor = torch.tensor([4])

    def loss(candidates):
        return float(uniformity_loss(emb, masks, anchor, 0,
                                     torch.tensor(candidates)))

    base = loss([1, 6])
    assert loss([4, 1, 6]) == pytest.approx(base, rel=1e-12)
    assert loss([4, 4, 1, 4, 6]) == pytest.approx(base, rel=1e-12)
    # only the anchor itself: the loss is -log(1) = 0
    assert loss([4, 4]) == pytest.approx(0.0, abs=1e-12)
    assert loss([]) == pytest.approx(0.0, abs=1e-12)


def test_uniformity_uses_inner_products_and_identical_masks_give_zero():
    emb, masks = embeddings(21, scale=0.5), random_masks(22)
    base = uniformity_loss(emb, masks, ANCHORS, 1)
    scaled = uniformity_loss(emb * 2, masks, ANCHORS, 1)
    assert abs(float(scaled) - float(base)) > 1e-3  # not cosine
    # all masks alike: every node positive, the ratio is 1
    full = torch.ones(N, D, dtype=torch.bool)
    assert float(uniformity_loss(emb, full, ANCHORS, 0)) == pytest.approx(
        0.0, abs=1e-12)


def test_uniformity_gradient_matches_reference():
    emb = embeddings(23, scale=0.7).requires_grad_()
    masks = random_masks(24)
    candidates = CANDIDATE_SETS['anchor drawn twice']
    uniformity_loss(emb, masks, ANCHORS, 1, candidates, 0.5).backward()
    ref = emb.detach().clone().requires_grad_()
    ref_uniformity(ref, masks, ANCHORS, 1, candidates, 0.5).backward()
    assert emb.grad.abs().sum() > 0
    assert torch.allclose(emb.grad, ref.grad, rtol=1e-9, atol=1e-12)


# Eq. 8 #######################################################################


def test_importance_scores_by_hand():
    student = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    teacher_weight = torch.tensor([0.2, 0.0, -1.0])
    teacher_score = torch.tensor([0.0, 2.0, -3.0])
    got = importance_scores(student, teacher_weight, teacher_score,
                            beta1=0.05, beta2=1.0)
    want = [1.0 + 0.05 * 0.2 + 0.5,
            -2.0 + 0.0 + sigma(2.0),
            0.5 - 0.05 + sigma(-3.0)]
    assert got.tolist() == pytest.approx(want, rel=1e-6)
    assert not got.requires_grad  # a decision, not a loss
    # the defaults are beta1 = 0.05, beta2 = 1
    assert importance_scores(student, teacher_weight,
                             teacher_score).tolist() == pytest.approx(
                                 want, rel=1e-6)
    other = importance_scores(student, teacher_weight, teacher_score,
                              beta1=0.5, beta2=2.0)
    assert other.tolist() == pytest.approx(
        [1.0 + 0.1 + 1.0, -2.0 + 2 * sigma(2.0), 0.5 - 0.5 +
         2 * sigma(-3.0)], rel=1e-6)
    # the student's weights are not changed in place
    assert student.tolist() == [1.0, -2.0, 0.5]


def test_importance_scores_drops_absent_or_zero_weighted_terms():
    student = torch.tensor([1.0, -2.0, 0.5])
    weight, score = torch.tensor([0.2, 0.4, -1.0]), torch.tensor([0., 2., 1.])
    only_score = [s + sigma(x) for s, x in zip(student.tolist(),
                                                score.tolist())]
    only_weight = [s + 0.05 * w for s, w in zip(student.tolist(),
                                                 weight.tolist())]
    assert importance_scores(student, None, score).tolist() == \
        pytest.approx(only_score, rel=1e-6)
    assert importance_scores(student, weight, score, beta1=0).tolist() == \
        pytest.approx(only_score, rel=1e-6)
    assert importance_scores(student, weight, None).tolist() == \
        pytest.approx(only_weight, rel=1e-6)
    assert importance_scores(student, weight, score, beta2=0).tolist() == \
        pytest.approx(only_weight, rel=1e-6)
    plain = importance_scores(student)
    assert plain.tolist() == student.tolist()
    plain[0] = 9.0  # a copy, not a view of the student's weights
    assert student[0] == 1.0


def test_importance_scores_shape_errors():
    student = torch.ones(3)
    with pytest.raises(ValueError, match="'teacher_weight'"):
        importance_scores(student, torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="'teacher_score'"):
        importance_scores(student, torch.ones(3), torch.ones(3, 1))


# Validation ##################################################################


@pytest.mark.parametrize('tau', [0, -0.1, float('nan'), True, None, '0.1'])
def test_temperatures_must_be_positive_numbers(tau):
    emb, masks = embeddings(25), random_masks(26)
    with pytest.raises(ValueError, match="'temperature'"):
        prediction_kd_loss(torch.zeros(3), torch.zeros(3), tau)
    with pytest.raises(ValueError, match="'temperature'"):
        embedding_kd_loss(emb, emb, ANCHORS, temperature=tau)
    with pytest.raises(ValueError, match="'temperature'"):
        uniformity_loss(emb, masks, ANCHORS, 1, temperature=tau)


def test_shape_errors():
    emb = embeddings(27)
    with pytest.raises(ValueError, match='same shape'):
        prediction_kd_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match='same shape'):
        embedding_kd_loss(emb, emb[:, :4], ANCHORS)
    with pytest.raises(ValueError, match="'masks'"):
        uniformity_loss(emb, torch.ones(N, 4, dtype=torch.bool), ANCHORS, 1)
    with pytest.raises(ValueError, match="'delta'"):
        uniformity_loss(emb, random_masks(28), ANCHORS, -1)


def test_importance_scores_standardized_predictions():
    student = torch.tensor([1.0, 1.0, 1.0, 1.0])
    score = torch.tensor([7.0, 9.0, 11.0, 13.0])  # a trained model's range
    mean, std = 10.0, statistics.stdev([7.0, 9.0, 11.0, 13.0])
    got = importance_scores(student, None, score, standardize=True)
    want = [1.0 + sigma((x - mean) / std) for x in score.tolist()]
    assert got.tolist() == pytest.approx(want, rel=1e-6)
    raw = importance_scores(student, None, score)  # saturated: all ~2
    assert float(raw.max() - raw.min()) < 1e-3
    assert float(got.max() - got.min()) > 0.5
    # a constant prediction carries no order: 0.5 for every edge
    flat = importance_scores(student, None, torch.full((4, ), 3.0),
                             standardize=True)
    assert flat.tolist() == [1.5] * 4
    one = importance_scores(torch.ones(1), None, torch.ones(1),
                            standardize=True)
    assert one.tolist() == [1.5]
