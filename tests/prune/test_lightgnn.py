import pytest
import torch
from torch_geometric.nn.models import LightGCN

from pyg_qgnn.nn.models.lightgnn import LightGNN
from pyg_qgnn.prune.lightgnn import (
    fold_layer_weights,
    joint_schedule,
    keep_top,
    keep_top_per_group,
    pair_lookup,
    prune_entries,
    prune_pairs,
    pruning_schedule,
    reduce_layers,
    teacher_edge_terms,
)

U, I, D = 7, 5, 6
PAIRS = torch.tensor([(0, 0), (0, 1), (0, 3), (1, 0), (1, 2), (2, 1),
                      (2, 2), (2, 3), (3, 0), (3, 3), (4, 1), (4, 2),
                      (5, 0), (5, 3), (3, 2)]).t().contiguous()

pytestmark = pytest.mark.usefixtures('one_thread')


def make_model(pairs=PAIRS, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = LightGNN(U, I, pairs, embedding_dim=D, **kwargs)
    with torch.no_grad():
        model.edge_weight.copy_(torch.randn(pairs.size(1)))
    return model


@pytest.mark.parametrize('keep,step', [(0.33, 0.2), (0.44, 0.15),
                                       (0.77, 0.05)])
def test_pruning_schedule_has_five_runs_ending_on_keep(keep, step):
    shares = pruning_schedule(keep, step)
    assert len(shares) == 5
    assert shares[-1] == keep  # exactly
    assert shares == pytest.approx([keep**(r / 5) for r in range(1, 6)],
                                   rel=1e-12, abs=0)
    assert all(a > b for a, b in zip([1.0] + shares, shares))
    # The same share of what remains goes in every run.
    ratios = [b / a for a, b in zip([1.0] + shares, shares)]
    assert ratios == pytest.approx([keep**0.2] * 5, rel=1e-12)


def test_pruning_schedule_other_cases():
    assert pruning_schedule(0.33, 0.2) == pytest.approx(
        [0.801, 0.642, 0.514, 0.412, 0.33], abs=1e-3)
    assert pruning_schedule(1, 0.2) == []
    assert pruning_schedule(1.0, 0.5) == []
    assert pruning_schedule(0.5, 0.5) == [0.5]
    assert pruning_schedule(0.9, 0.5) == [0.9]  # at least one run
    assert pruning_schedule(0.25, 0.5) == pytest.approx([0.5, 0.25])
    assert len(pruning_schedule(0.1, 0.1)) == 22  # log 0.1 / log 0.9 = 21.9


@pytest.mark.parametrize('keep', [0, 0.0, -0.5, 1.01, True, '0.5', None])
def test_pruning_schedule_rejects_keep(keep):
    with pytest.raises(ValueError, match="'keep'"):
        pruning_schedule(keep, 0.2)


@pytest.mark.parametrize('step', [0, 1, 1.0, -0.1, 2, True, None])
def test_pruning_schedule_rejects_step(step):
    with pytest.raises(ValueError, match="'step'"):
        pruning_schedule(0.5, step)


def test_joint_schedule():
    runs = joint_schedule(0.33, 0.2, 0.5, 0.5)  # 5 runs and 1 run
    assert len(runs) == 5
    assert runs[-1] == (0.33, 0.5)
    for r, (edge, entry) in enumerate(runs, start=1):
        assert edge == pytest.approx(0.33**(r / 5), rel=1e-12)
        assert entry == pytest.approx(0.5**(r / 5), rel=1e-12)
    runs = joint_schedule(1.0, 0.2, 0.44, 0.15)
    assert [edge for edge, _ in runs] == [1.0] * 5
    assert runs[-1][1] == 0.44
    assert len(joint_schedule(0.5, 0.5, 0.1, 0.1)) == 22
    assert joint_schedule(1, 0.2, 1, 0.3) == []
    with pytest.raises(ValueError, match="'step'"):
        joint_schedule(0.5, 0.5, 0.5, 1.0)


def test_keep_top_by_magnitude():
    score = torch.tensor([3.0, -5.0, 1.0, 5.0, 0.0, 2.0])
    current = torch.ones(6, dtype=torch.bool)
    assert keep_top(score, current, 3).tolist() == [True, True, False, True,
                                                    False, False]
    assert keep_top(score, current, 0).tolist() == [False] * 6
    assert keep_top(score, current, 6).tolist() == [True] * 6
    # Ties go to the earlier position.
    tied = torch.tensor([1.0, 2.0, -2.0, 2.0, 1.0])
    assert keep_top(tied, torch.ones(5, dtype=torch.bool), 2).tolist() == [
        False, True, True, False, False]
    # Dropped entries stay dropped, however large their score.
    current = torch.tensor([False, True, True, True])
    out = keep_top(torch.tensor([9.0, 1.0, -8.0, 7.0]), current, 2)
    assert out.tolist() == [False, False, True, True]
    assert out.dtype == torch.bool


def test_keep_top_keeps_the_shape():
    score = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    current = score.abs() > 0.2
    out = keep_top(score, current, 5)
    assert out.shape == (4, 5) and int(out.sum()) == 5
    assert not bool((out & ~current).any())
    kept = score.abs()[out]
    dropped = score.abs()[current & ~out]
    assert kept.min() > dropped.max()


def test_keep_top_random_draw():
    current = torch.arange(40) % 3 != 0  # 26 candidates

    def draw(seed):
        return keep_top(None, current, 13,
                        torch.Generator().manual_seed(seed))

    out = draw(0)
    assert int(out.sum()) == 13
    assert not bool((out & ~current).any())
    assert torch.equal(draw(0), out)  # reproducible
    assert not torch.equal(draw(1), out)


@pytest.mark.parametrize('count', [-1, 4])
def test_keep_top_rejects_count(count):
    current = torch.tensor([True, False, True, True])
    with pytest.raises(ValueError, match="'count' must be in \\[0, 3\\]"):
        keep_top(torch.ones(4), current, count)


def top_magnitude(values, count, current=None):
    r"""Sort-based reference: the :obj:`count` largest |values|."""
    flat = values.abs().flatten()
    if current is not None:
        flat = torch.where(current.flatten(), flat, torch.full_like(flat, -1))
    out = torch.zeros(flat.numel(), dtype=torch.bool)
    out[torch.argsort(flat, descending=True, stable=True)[:count]] = True
    return out.view_as(values)


def test_prune_entries_keeps_the_largest():
    model = make_model()
    raw = model.raw_embedding.detach().clone()
    assert prune_entries(model, 0.5, scope='table') == 36
    assert int(model.entry_mask.sum()) == 36
    assert torch.equal(model.entry_mask, top_magnitude(raw, 36))
    assert torch.equal(model.raw_embedding.detach(), raw)  # values stay
    model = make_model()
    # round(0.33 * 72) = 24
    assert prune_entries(model, 0.33, scope='table') == 24
    assert torch.equal(model.entry_mask, top_magnitude(raw, 24))


def test_prune_entries_is_cumulative():
    model = make_model()
    prune_entries(model, 0.5, scope='table')
    first = model.entry_mask.clone()
    with torch.no_grad():  # pruned entries grow large: still never revived
        model.raw_embedding[~first] = 10.0
    assert prune_entries(model, 0.25, scope='table') == 18
    second = model.entry_mask.clone()
    assert int(second.sum()) == 18
    assert not bool((second & ~first).any())
    assert torch.equal(second, top_magnitude(model.raw_embedding.detach(),
                                             18, first))
    with pytest.raises(ValueError, match="'count'"):  # cannot grow back
        prune_entries(model, 0.5, scope='table')
    assert torch.equal(model.entry_mask, second)


def test_prune_entries_random_and_errors():
    model = make_model()
    gen = torch.Generator().manual_seed(0)
    assert prune_entries(model, 0.5, 'random', gen) == 36
    mask = model.entry_mask.clone()
    assert int(mask.sum()) == 36
    assert not torch.equal(mask, top_magnitude(model.raw_embedding, 36))
    other = make_model()
    prune_entries(other, 0.5, 'random', torch.Generator().manual_seed(0))
    assert torch.equal(other.entry_mask, mask)
    with pytest.raises(ValueError, match="'score'"):
        prune_entries(model, 0.5, 'gradient')
    with pytest.raises(ValueError, match="'keep'"):
        prune_entries(model, 0.0)
    with pytest.raises(ValueError, match="'scope' must be one of"):
        prune_entries(model, 0.5, scope='row')


def per_group_reference(values, current, count, group):
    r"""Loop reference of :func:`keep_top_per_group`: every kept entry's
    rank r among its group's n kept entries (largest |value| first, ties:
    earlier) gives the share (r + 1/2) / n; the smallest shares win (ties:
    larger |value|, then earlier)."""
    values, kept = values.abs().flatten().tolist(), current.flatten().tolist()
    group = group.tolist()
    keys = []
    for g in set(group):
        members = sorted((i for i in range(len(kept)) if kept[i] and
                          group[i] == g), key=lambda i: (-values[i], i))
        keys += [((r + 0.5) / len(members), -values[i], i)
                 for r, i in enumerate(members)]
    out = torch.zeros(len(kept), dtype=torch.bool)
    for *_, i in sorted(keys)[:count]:
        out[i] = True
    return out.view_as(current)


@pytest.mark.parametrize('count', [0, 1, 5, 11, 17, 23, 27])
def test_keep_top_per_group_against_loop_reference(count):
    gen = torch.Generator().manual_seed(count)
    values = torch.randn(6, 5, generator=gen)
    values[2, 1] = values[2, 3] = 0.5  # a tie: the earlier position first
    current = torch.rand(6, 5, generator=gen) > 0.1
    current[4] = False  # an emptied row keeps nothing
    count = min(count, int(current.sum()))
    rows = torch.arange(6).repeat_interleave(5)
    ragged = torch.randint(3, (30, ), generator=gen)  # groups of any size
    for group in (rows, ragged):
        out = keep_top_per_group(values, current, count, group)
        assert out.shape == current.shape and int(out.sum()) == count
        assert not bool((out & ~current).any())
        assert torch.equal(out, per_group_reference(values, current, count,
                                                    group))


def test_keep_top_per_group_spreads_evenly():
    values = torch.tensor([[5.0, 4.0, 3.0, 2.0], [0.4, 0.3, 0.2, 0.1],
                           [9.0, 8.0, 7.0, 6.0]])
    current = torch.ones(3, 4, dtype=torch.bool)
    rows = torch.arange(3).repeat_interleave(4)
    out = keep_top_per_group(values, current, 7, rows)
    # two each, then the largest third-ranked entry (row 2's 7.0)
    assert out.sum(1).tolist() == [2, 2, 3]
    assert out[1].tolist() == [True, True, False, False]
    # a group twice as large keeps twice as many
    group = torch.tensor([0, 0, 1, 1, 1, 1])
    out = keep_top_per_group(torch.arange(6.0), torch.ones(6, dtype=bool), 3,
                             group)
    assert out.tolist() == [False, True, False, False, True, True]
    with pytest.raises(ValueError, match="'count' must be in"):
        keep_top_per_group(values, current, 13, rows)
    with pytest.raises(ValueError, match="'group' must hold one id"):
        keep_top_per_group(values, current, 2, rows[:5])
    gen = torch.Generator().manual_seed(0)
    drawn = keep_top_per_group(None, current, 6, rows, gen)
    assert drawn.sum(1).tolist() == [2, 2, 2]


def test_prune_entries_per_node():
    model = make_model()
    raw = model.raw_embedding.detach().clone()
    assert prune_entries(model, 0.5) == 36  # scope='node' by default
    assert model.entry_mask.sum(1).tolist() == [3] * (U + I)
    rows = torch.arange(U + I).repeat_interleave(D)
    assert torch.equal(model.entry_mask, per_group_reference(
        raw, torch.ones_like(model.entry_mask), 36, rows))
    first = model.entry_mask.clone()
    assert prune_entries(model, 0.4) == 29  # 2 each, 5 rows keep a third
    assert sorted(model.entry_mask.sum(1).tolist()) == [2] * 7 + [3] * 5
    assert not bool((model.entry_mask & ~first).any())
    other = make_model()
    prune_entries(other, 0.5, 'random', torch.Generator().manual_seed(0))
    assert other.entry_mask.sum(1).tolist() == [3] * (U + I)
    assert not torch.equal(other.entry_mask, first)


def test_prune_pairs_by_score():
    model = make_model()
    score = torch.randn(15, generator=torch.Generator().manual_seed(1))
    assert prune_pairs(model, 0.6, score, scope='graph') == 9
    first = model.edge_mask.clone()
    assert torch.equal(first, top_magnitude(score, 9))
    assert model.adjacency().nnz == 18
    score[~first] = 100.0  # dropped pairs are never revived
    assert prune_pairs(model, 0.4, score, scope='graph') == 6
    assert int(model.edge_mask.sum()) == 6
    assert not bool((model.edge_mask & ~first).any())
    assert torch.equal(model.edge_mask, top_magnitude(score, 6, first))


def test_prune_pairs_per_user():
    model = make_model()
    score = torch.randn(15, generator=torch.Generator().manual_seed(1))
    assert prune_pairs(model, 0.6, score) == 9  # scope='user' by default
    users = PAIRS[0]
    assert torch.equal(model.edge_mask, per_group_reference(
        score, torch.ones(15, dtype=torch.bool), 9, users))
    degree = torch.bincount(users)
    kept = torch.bincount(users[model.edge_mask], minlength=degree.numel())
    assert bool(((kept - 0.6 * degree).abs() < 1).all())  # each ~60%
    assert int(kept.min()) >= 1
    with pytest.raises(ValueError, match="'scope' must be one of"):
        prune_pairs(model, 0.5, score, scope='node')


def test_prune_pairs_random_and_errors():
    model = make_model()
    assert prune_pairs(model, 0.5, None,
                       torch.Generator().manual_seed(0)) == 8  # round(7.5)
    mask = model.edge_mask.clone()
    assert int(mask.sum()) == 8
    other = make_model()
    prune_pairs(other, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(other.edge_mask, mask)
    with pytest.raises(ValueError, match="'score'"):
        prune_pairs(model, 0.5, torch.ones(14))
    with pytest.raises(ValueError, match="'score'"):
        prune_pairs(model, 0.5, torch.ones(15, 1))
    with pytest.raises(ValueError, match="'keep'"):
        prune_pairs(model, 1.5)
    assert torch.equal(model.edge_mask, mask)


def test_pair_lookup():
    perm = torch.randperm(15, generator=torch.Generator().manual_seed(2))
    reference = PAIRS[:, perm]
    query = torch.tensor([[3, 6, 0, 5, 0, 1], [2, 4, 0, 3, 2, 2]])
    pos = pair_lookup(query, reference, I)
    assert pos.dtype == torch.long and pos.shape == (6, )
    assert pos[[1, 4]].tolist() == [-1, -1]  # (6, 4), (0, 2) are absent
    found = pos >= 0
    assert int(found.sum()) == 4
    assert torch.equal(reference[:, pos[found]], query[:, found])
    everything = pair_lookup(PAIRS, reference, I)
    assert torch.equal(reference[:, everything], PAIRS)
    assert torch.equal(everything, torch.argsort(perm))
    empty = torch.empty(2, 0, dtype=torch.long)
    assert pair_lookup(query, empty, I).tolist() == [-1] * 6
    assert pair_lookup(empty, reference, I).numel() == 0


def test_teacher_edge_terms_with_a_lightgnn_teacher():
    extra = torch.tensor([[6, 6, 4], [4, 0, 4]])  # the teacher's superset
    teacher = make_model(torch.cat([PAIRS, extra], 1), seed=1)
    pruned = torch.ones(18, dtype=torch.bool)
    pruned[[2, 16]] = False  # (0, 3) and (6, 0)
    teacher.set_edge_mask(pruned)
    # The student: some pairs, in another order, plus one the teacher lacks.
    student_pairs = torch.tensor([[6, 0, 3, 0, 6, 1, 5],
                                  [0, 3, 2, 0, 1, 2, 3]])
    student = make_model(student_pairs)
    teacher_emb = torch.randn(U + I, D)
    weight, score = teacher_edge_terms(student, teacher, teacher_emb)
    w = teacher.edge_weight.detach()
    expected = torch.tensor([0.0, 0.0, w[14], w[0], 0.0, w[4], w[13]])
    assert torch.equal(weight, expected)  # pruned (6, 0), (0, 3); no (6, 1)
    dots = (teacher_emb[student_pairs[0]] *
            teacher_emb[U + student_pairs[1]]).sum(-1)
    assert torch.allclose(score, dots)
    assert score.shape == (7, )


def test_teacher_edge_terms_with_a_plain_lightgcn():
    teacher = LightGCN(U + I, D, 2)
    edge_index = torch.cat([torch.stack([PAIRS[0], U + PAIRS[1]]),
                            torch.stack([U + PAIRS[1], PAIRS[0]])], 1)
    with torch.no_grad():
        teacher_emb = teacher.get_embedding(edge_index)
    student = make_model()
    weight, score = teacher_edge_terms(student, teacher, teacher_emb)
    assert weight is None
    with torch.no_grad():
        expected = teacher(edge_index, edge_index[:, :15])  # the same dots
    assert torch.allclose(score, expected, atol=1e-6)


def test_reduce_layers():
    model = make_model(num_layers=3)
    prune_pairs(model, 0.6, torch.randn(15))
    prune_entries(model, 0.5)
    small = reduce_layers(model, 1)
    assert small.num_layers == 1 and model.num_layers == 3
    assert small.alpha.tolist() == [0.25, 0.75]  # folded
    assert model.alpha.tolist() == [0.25] * 4
    assert small.state_dict()['alpha'].shape == (2, )
    assert torch.equal(small.edge_mask, model.edge_mask)
    assert torch.equal(small.entry_mask, model.entry_mask)
    assert torch.equal(small.raw_embedding, model.raw_embedding)
    assert torch.equal(small.edge_weight, model.edge_weight)

    ref = LightGNN(U, I, PAIRS, embedding_dim=D, num_layers=1)
    ref.load_state_dict(dict(model.state_dict(),
                             alpha=torch.tensor([0.25, 0.75])))
    with torch.no_grad():
        assert torch.equal(small.get_embedding(), ref.get_embedding())
        assert not torch.allclose(small.get_embedding(),
                                  model.get_embedding())

    # An independent copy: editing it leaves the model alone.
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        small.edge_weight.add_(1.0)
        small.raw_embedding.mul_(2.0)
    small.set_edge_mask(torch.zeros(15, dtype=torch.bool))
    small.set_entry_mask(torch.ones(U + I, D, dtype=torch.bool))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key

    zero = reduce_layers(model, 0)
    assert zero.alpha.tolist() == [1.0]
    with torch.no_grad():
        assert torch.equal(zero.get_embedding(), zero.embedding.weight)
    for bad in (-1, True, 1.0):
        with pytest.raises(ValueError, match="'num_layers'"):
            reduce_layers(model, bad)


def test_fold_layer_weights():
    alpha = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert torch.allclose(fold_layer_weights(alpha, 2),
                          torch.tensor([0.1, 0.2, 0.7]))
    assert torch.allclose(fold_layer_weights(alpha, 0), torch.tensor([1.0]))
    assert torch.equal(fold_layer_weights(alpha, 3), alpha)
    assert torch.allclose(fold_layer_weights(alpha, 5),  # grown: new get 0
                          torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0, 0.0]))
    for layers in range(6):
        assert abs(float(fold_layer_weights(alpha, layers).sum()) - 1) < 1e-6


def test_prune_entries_by_saliency():
    model = make_model()
    with torch.no_grad():  # so that saliency and magnitude disagree
        model.edge_weight.copy_(torch.rand(model.edge_weight.shape,
                                           generator=torch.Generator()
                                           .manual_seed(3)) * 3)
    raw = model.raw_embedding.detach().clone()
    with torch.no_grad():
        final = model.get_embedding()
    # each entry's term of e_n . final_n, taken per node
    saliency = raw * final
    rows = torch.arange(U + I).repeat_interleave(D)
    assert prune_entries(model, 0.5, 'saliency') == 36
    expected = per_group_reference(saliency, torch.ones_like(
        model.entry_mask), 36, rows)
    assert torch.equal(model.entry_mask, expected)
    assert not torch.equal(expected, per_group_reference(
        raw, torch.ones_like(expected), 36, rows))
    # cumulative, and scored under the current masks
    first = model.entry_mask.clone()
    with torch.no_grad():
        final = model.get_embedding()
    assert prune_entries(model, 0.25, 'saliency', scope='table') == 18
    assert torch.equal(model.entry_mask,
                       top_magnitude(raw * final, 18, first))
