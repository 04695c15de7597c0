"""Tests of the LightGNN training loss, loop and pipeline on a tiny
synthetic dataset (seconds on a CPU)."""
import copy
import math
from dataclasses import replace

import pytest
import torch

from pyg_qgnn.datasets.recsys import synthetic_interactions
from pyg_qgnn.distill.lightgnn import (
    embedding_kd_loss,
    prediction_kd_loss,
    triple_margins,
    uniformity_loss,
)
from pyg_qgnn.nn.models.lightgnn import LightGNN, lightgcn_forward_flops
from pyg_qgnn.train.lightgnn import (
    ABLATIONS,
    LightGNNConfig,
    evaluate_lightgnn,
    lightgnn_embeddings,
    lightgnn_step_loss,
    train_lightgnn,
    tune_layer_weights,
)
from pyg_qgnn.train import lightgnn_pipeline as pipeline
from pyg_qgnn.train.lightgnn_pipeline import (
    augmented_pairs,
    build_lightgnn,
    format_lightgnn_rows,
    forward_call,
    lightgcn_nbytes,
    plot_lightgnn_rows,
    run_lightgnn,
    time_forwards,
)
from pyg_qgnn.train.recsys import bpr_loss, lightgcn, train_recommender

pytestmark = pytest.mark.usefixtures('one_thread')

DIM = 8


@pytest.fixture(scope='module')
def data():
    return synthetic_interactions(num_users=40, num_items=60,
                                  items_per_user=10, num_clusters=4)


@pytest.fixture(scope='module')
def teacher(data):
    model = lightgcn(data.num_users, data.num_items, DIM, 2)
    train_recommender(model, data, 3, lr=0.01, batch_size=128, ks=(20, 40))
    return model


def batch(data, size=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    users, pos = data.train[:, :size]
    neg = torch.randint(data.num_items, (size, 1), generator=gen)
    return users, pos, neg


def pruned_model(data, seed=0, dtype=torch.float32, **kwargs):
    r"""A LightGNN with random edge weights, 20% of its edges and 40% of
    its entries pruned."""
    torch.manual_seed(seed)
    model = LightGNN(data.num_users, data.num_items, data.train, DIM, 2,
                     **kwargs).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.edge_weight.copy_(torch.rand(model.edge_weight.shape,
                                           generator=gen) + 0.5)
    model.set_edge_mask(torch.rand(model.edge_mask.shape, generator=gen)
                        > 0.2)
    model.set_entry_mask(torch.rand(model.entry_mask.shape, generator=gen)
                         > 0.4)
    return model


def teacher_table(data, seed=1, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(data.num_nodes, DIM, generator=gen) * 0.3).to(dtype)


def step(model, data, config, teacher_emb, uniformity, seed=0):
    users, pos, neg = batch(data)
    gen = torch.Generator().manual_seed(seed)
    return lightgnn_step_loss(model, users, pos, neg, teacher_emb, config,
                              gen, uniformity)


# lightgnn_step_loss ##########################################################

ALL = {'bpr', 'edge_l2', 'pred_kd', 'emb_kd', 'uniformity'}


@pytest.mark.parametrize('config,model_args,with_teacher,uniformity,parts', [
    ({}, {}, True, True, ALL),
    ({}, {}, True, False, ALL - {'uniformity'}),
    (dict(bilevel=False), {}, True, True, ALL - {'pred_kd', 'emb_kd'}),
    ({}, {}, False, True, ALL - {'pred_kd', 'emb_kd'}),
    ({}, dict(learn_edge_weight=False), True, True, ALL - {'edge_l2'}),
    (dict(edge_reg=0.0), {}, True, True, ALL - {'edge_l2'}),
    (dict(lambda_unif=0.0), {}, True, True, ALL - {'uniformity'}),
    (dict(bilevel=False, edge_reg=0.0), {}, True, False, {'bpr'}),
])
def test_step_loss_parts_follow_the_switches(data, config, model_args,
                                             with_teacher, uniformity, parts):
    model = pruned_model(data, **model_args)
    c = LightGNNConfig(embedding_dim=DIM, kd_triples=64,
                       contrast_candidates=16, **config)
    teacher_emb = teacher_table(data) if with_teacher else None
    total, got = step(model, data, c, teacher_emb, uniformity)
    assert set(got) == parts
    assert float(total.detach()) == pytest.approx(sum(got.values()),
                                                rel=1e-6)
    assert all(math.isfinite(v) for v in got.values())
    assert all(v > 0 for v in got.values())


@pytest.mark.parametrize('limit', ['all', 45])
def test_step_loss_parts_are_eq_11_terms(data, limit):
    r"""Each part recomputed from the distillation losses. With
    :obj:`contrast_candidates` at least a side's size, that side is
    contrasted with all its nodes; with 45 (40 users, 60 items) the users
    are, and the items are sampled: 45 draws after the KD triples."""
    model = pruned_model(data, dtype=torch.float64)
    teacher_emb = teacher_table(data, dtype=torch.float64)
    U, I = data.num_users, data.num_items
    assert U <= 45 < I
    c = LightGNNConfig(embedding_dim=DIM, kd_triples=50,
                       contrast_candidates=max(U, I) if limit == 'all'
                       else limit, lambda_bpr=0.7,
                       lambda_pred=0.3, lambda_emb=0.2, lambda_unif=0.5,
                       reg=1e-3, edge_reg=0.01, tau_pred=0.5, tau_emb=0.2,
                       tau_unif=0.8, delta=1)
    total, got = step(model, data, c, teacher_emb, True, seed=7)
    users, pos, neg = batch(data)
    with torch.no_grad():
        out = model.get_embedding()
        ego = model.embedding.weight[torch.cat([users, U + pos,
                                                U + neg[:, 0]])]
        pos_s = (out[users] * out[U + pos]).sum(-1)
        neg_s = (out[users] * out[U + neg[:, 0]]).sum(-1)
        gen = torch.Generator().manual_seed(7)
        triples = torch.stack([torch.randint(U, (50, ), generator=gen),
                               torch.randint(I, (50, ), generator=gen),
                               torch.randint(I, (50, ), generator=gen)])
        kd_items = unif_items = None
        if limit != 'all':
            kd_items = torch.randint(I, (limit, ), generator=gen)
            unif_items = torch.randint(I, (limit, ), generator=gen)
        mask = model.entry_mask
        su, si = torch.unique(users), torch.unique(pos)
        want = {
            'bpr': 0.7 * bpr_loss(pos_s, neg_s.view(-1, 1), ego, 1e-3),
            'edge_l2': 0.01 * model.edge_weight[model.edge_mask].pow(2).sum(),
            'pred_kd': 0.3 * prediction_kd_loss(
                triple_margins(out, triples, U),
                triple_margins(teacher_emb, triples, U), 0.5),
            'emb_kd': 0.2 * (
                embedding_kd_loss(out[:U], teacher_emb[:U], su,
                                  temperature=0.2) +
                embedding_kd_loss(out[U:], teacher_emb[U:], si, kd_items,
                                  temperature=0.2)),
            'uniformity': 0.5 * (
                uniformity_loss(out[:U], mask[:U], su, 1, temperature=0.8) +
                uniformity_loss(out[U:], mask[U:], si, 1, unif_items,
                                temperature=0.8)),
        }
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(float(value), rel=1e-9), key
    assert float(total.detach()) == pytest.approx(
        sum(float(v) for v in want.values()), rel=1e-9)


@pytest.mark.parametrize('only', ['bpr', 'pred_kd', 'emb_kd', 'uniformity'])
def test_each_loss_term_trains_the_edge_weights(data, only):
    model = pruned_model(data)
    lambdas = dict(lambda_bpr=0.0, lambda_pred=0.0, lambda_emb=0.0,
                   lambda_unif=0.0)
    lambdas['lambda_' + {'bpr': 'bpr', 'pred_kd': 'pred', 'emb_kd': 'emb',
                         'uniformity': 'unif'}[only]] = 1.0
    c = LightGNNConfig(embedding_dim=DIM, kd_triples=64,
                       contrast_candidates=None, reg=0.0, edge_reg=0.0,
                       **lambdas)
    loss, parts = step(model, data, c, teacher_table(data), True)
    assert parts[only] > 0
    loss.backward()
    grad, kept = model.edge_weight.grad, model.edge_mask
    assert (grad[kept] != 0).float().mean() > 0.5
    assert (grad[~kept] == 0).all()  # pruned edges take no part


def test_edge_weight_gradient_matches_finite_differences(data):
    model = pruned_model(data, dtype=torch.float64)
    teacher_emb = teacher_table(data, dtype=torch.float64)
    c = LightGNNConfig(embedding_dim=DIM, kd_triples=64,
                       contrast_candidates=16, lambda_emb=0.5,
                       lambda_unif=0.5, edge_reg=0.01)

    def loss():
        return step(model, data, c, teacher_emb, True, seed=3)[0]

    loss().backward()
    grad = model.edge_weight.grad.clone()
    kept = model.edge_mask.nonzero().view(-1)
    h = 1e-6
    for k in kept[:: max(1, kept.numel() // 6)].tolist():
        with torch.no_grad():
            model.edge_weight[k] += h
            up = float(loss())
            model.edge_weight[k] -= 2 * h
            down = float(loss())
            model.edge_weight[k] += h
        assert grad[k].item() == pytest.approx((up - down) / (2 * h),
                                               rel=1e-4, abs=1e-9), k
        assert grad[k].item() != 0


# train_lightgnn / evaluate_lightgnn ##########################################


def fresh_model(data, seed=0):
    torch.manual_seed(seed)
    return LightGNN(data.num_users, data.num_items, data.train, DIM, 2)


def test_train_lightgnn_restores_the_best_validation_state(data):
    model = fresh_model(data)
    c = LightGNNConfig(embedding_dim=DIM, lr=0.01, batch_size=64,
                       kd_triples=64, contrast_candidates=16, patience=None)
    seen = []
    result = train_lightgnn(model, data, 6, c, teacher_table(data),
                            progress=seen.append)
    assert result.epochs_run == 6 and len(result.history) == 7
    assert seen == result.history
    assert [h['epoch'] for h in result.history] == list(range(7))
    assert set(result.history[0]) == {'epoch', 'seconds', 'recall@20',
                                      'recall@40', 'ndcg@20', 'ndcg@40'}
    recalls = [h['recall@20'] for h in result.history]
    # the example is one where the last epoch is not the best
    assert 0 < result.epoch < result.epochs_run
    assert recalls[-1] < max(recalls)
    assert result.epoch == recalls.index(max(recalls))
    assert result.val == {k: v for k, v in result.history[result.epoch]
                          .items() if '@' in k}
    fresh = evaluate_lightgnn(model, data, 'val')
    assert set(fresh) == {'recall@20', 'recall@40', 'ndcg@20', 'ndcg@40'}
    assert fresh == pytest.approx(result.val, abs=1e-6)
    assert evaluate_lightgnn(model, data, 'val', ks=(20, 40)) == \
        pytest.approx(result.val, abs=1e-6)
    assert {'bpr', 'edge_l2', 'pred_kd', 'emb_kd', 'epoch', 'seconds'} <= \
        set(result.history[1])


def test_train_lightgnn_keeps_the_start_when_training_only_hurts(data):
    model = fresh_model(data)
    c = LightGNNConfig(embedding_dim=DIM, lr=0.01, batch_size=64,
                       kd_triples=64, contrast_candidates=16, patience=None)
    train_lightgnn(model, data, 4, c)  # a model worth keeping
    start = copy.deepcopy(model.state_dict())
    before = evaluate_lightgnn(model, data, 'val')
    result = train_lightgnn(model, data, 2, replace(c, lr=5.0))
    recalls = [h['recall@20'] for h in result.history]
    assert recalls[0] == pytest.approx(before['recall@20'], abs=1e-6)
    assert max(recalls[1:]) < recalls[0]  # lr 5 wrecks it
    assert result.epoch == 0 and result.epochs_run == 2
    assert result.val == pytest.approx(before, abs=1e-6)
    for key, value in model.state_dict().items():
        assert torch.equal(value, start[key]), key


def test_train_lightgnn_early_stopping_and_eval_every(data):
    c = LightGNNConfig(embedding_dim=DIM, lr=0.01, batch_size=64,
                       kd_triples=64, contrast_candidates=16, patience=2)
    result = train_lightgnn(fresh_model(data), data, 20, c)
    assert result.epochs_run < 20
    assert result.epochs_run == result.epoch + 2
    c = replace(c, eval_every=2, patience=None)
    result = train_lightgnn(fresh_model(data), data, 5, c)
    assert [h['epoch'] for h in result.history] == [0, 2, 4, 5]


def test_train_lightgnn_holds_the_masks(data):
    model = pruned_model(data)
    edge_mask, entry_mask = model.edge_mask.clone(), model.entry_mask.clone()
    pruned_weights = model.edge_weight[~edge_mask].detach().clone()
    c = LightGNNConfig(embedding_dim=DIM, lr=0.05, batch_size=64,
                       kd_triples=64, contrast_candidates=16)
    before = model.edge_weight[edge_mask].detach().clone()
    train_lightgnn(model, data, 2, c, teacher_table(data), uniformity=True)
    assert torch.equal(model.edge_mask, edge_mask)
    assert torch.equal(model.entry_mask, entry_mask)
    assert (model.embedding.weight[~entry_mask] == 0).all()
    assert torch.equal(model.edge_weight[~edge_mask].detach(),
                       pruned_weights)
    assert not torch.equal(model.edge_weight[edge_mask].detach(), before)


def test_evaluate_lightgnn_test_split_masks_validation_items(data, teacher):
    val = evaluate_lightgnn(teacher, data, 'val')
    test = evaluate_lightgnn(teacher, data)
    assert set(test) == set(val) == {'recall@20', 'recall@40', 'ndcg@20',
                                     'ndcg@40'}
    assert all(0 <= v <= 1 for v in test.values())
    with pytest.raises(ValueError, match="'split'"):
        evaluate_lightgnn(teacher, data, 'train')


# The pipeline ################################################################

CONFIG = LightGNNConfig(embedding_dim=DIM, edge_keep=0.44, entry_keep=0.33,
                        edge_step=0.5, entry_step=0.5, run_epochs=1,
                        final_epochs=2, intermediate_epochs=1,
                        batch_size=128, kd_triples=128,
                        contrast_candidates=32, max_per_node=4)
METHODS = ('lightgnn', 'random-both', 'no-intermediate')


def test_tune_layer_weights_never_lowers_validation_recall(data, teacher):
    model = build_lightgnn(data, data.train, teacher, 1)
    assert model.alpha.tolist() == pytest.approx([1 / 3, 2 / 3])  # folded
    model.set_entry_mask(torch.rand(model.entry_mask.shape, generator=torch.
                                    Generator().manual_seed(0)) > 0.6)
    with torch.no_grad():
        model.alpha.copy_(torch.tensor([0.9, 0.1]))  # a poor start
    before = evaluate_lightgnn(model, data, 'val')['recall@20']
    best = tune_layer_weights(model, data, step=0.2, min_step=0.05)
    assert best >= before
    assert best == pytest.approx(
        evaluate_lightgnn(model, data, 'val')['recall@20'])
    assert abs(float(model.alpha.sum()) - 1) < 1e-6
    assert bool((model.alpha >= -1e-6).all())
    # every weight is a multiple of the smallest step from the start
    assert torch.allclose((model.alpha - 0.9).div(0.05).round() * 0.05 + 0.9,
                          model.alpha, atol=1e-5)
    with pytest.raises(ValueError, match="'step' and 'min_step'"):
        tune_layer_weights(model, data, step=0.05, min_step=0.1)


@pytest.fixture(scope='module')
def run(data, teacher):
    return run_lightgnn(data, teacher, CONFIG, METHODS, teacher_seconds=1.5)


def test_run_rows_and_shares(data, teacher, run):
    E, entries = data.train.size(1), data.num_nodes * DIM
    assert [r.method for r in run.rows] == ['teacher', 'intermediate',
                                            *METHODS]
    assert set(run.students) == set(METHODS)
    base = run.rows[0]
    assert base.bytes == lightgcn_nbytes(data.num_users, data.num_items,
                                         DIM, E)
    assert base.flops == lightgcn_forward_flops(data.num_nodes, 2 * E, DIM,
                                                2)
    assert (base.edge_share, base.entry_share, base.layers) == (1.0, 1.0, 2)
    assert base.train_seconds == 1.5
    assert base.val_recall20 == pytest.approx(
        evaluate_lightgnn(teacher, data, 'val')['recall@20'])
    assert base.test == pytest.approx(evaluate_lightgnn(teacher, data))

    middle = run.rows[1]
    pairs = augmented_pairs(data, CONFIG.hops, CONFIG.max_per_node)
    assert torch.equal(run.intermediate.pairs, pairs)
    assert middle.edge_share == pairs.size(1) / E > 1
    assert middle.entry_share == 1.0
    assert middle.layers == CONFIG.intermediate_layers

    kept_edges, kept_entries = round(0.44 * E), round(0.33 * entries)
    for row in run.rows[2:]:
        student = run.students[row.method]
        assert row.label == ABLATIONS[row.method][0]
        assert row.edge_share == kept_edges / E
        assert row.entry_share == kept_entries / entries
        assert int(student.edge_mask.sum()) == kept_edges
        assert int(student.entry_mask.sum()) == kept_entries
        assert row.layers == student.num_layers == CONFIG.student_layers
        assert row.bytes < base.bytes
        assert row.flops < base.flops
        assert row.test == pytest.approx(evaluate_lightgnn(student, data),
                                         abs=1e-6)
        assert row.val_recall20 == pytest.approx(
            evaluate_lightgnn(student, data, 'val')['recall@20'], abs=1e-6)
        # two pruning runs of one epoch, then the fine-tuning run, each
        # evaluated at its start too
        assert [h['epoch'] for h in row.history].count(0) == 3
        assert 6 <= len(row.history) <= 7
    assert not torch.equal(run.students['lightgnn'].edge_mask,
                           run.students['random-both'].edge_mask)
    # every user keeps about 44% of its edges, every node 33% of its
    # entries (within one per pruning run), learned or random
    users = data.train[0]
    degree = torch.bincount(users, minlength=data.num_users).double()
    for student in run.students.values():
        kept = torch.bincount(users[student.edge_mask],
                              minlength=data.num_users)
        assert float((kept - 0.44 * degree).abs().max()) <= 2
        per_node = student.entry_mask.sum(1).double()
        assert float((per_node - 0.33 * DIM).abs().max()) <= 2


def test_without_intermediate_layer_no_intermediate_model(data, teacher):
    small = replace(CONFIG, final_epochs=1)
    out = run_lightgnn(data, teacher, small, ['no-intermediate'])
    assert out.intermediate is None
    assert [r.method for r in out.rows] == ['teacher', 'no-intermediate']


@pytest.mark.parametrize('intermediate_val,select,source', [
    (2.0, True, 'intermediate'),   # better than the teacher: used
    (-1.0, True, 'teacher'),       # worse: the teacher instead
    (-1.0, False, 'intermediate'),  # the paper's: always used
])
def test_student_source_is_selected_on_validation(
        data, teacher, monkeypatch, intermediate_val, select, source):
    real = pipeline.train_intermediate
    seen = {}

    def stub(*args, **kwargs):
        model, stage = real(*args, **kwargs)
        stage.val['recall@20'] = intermediate_val
        seen['model'] = model
        return model, stage

    def build(data_, pairs, source_model, *args, **kwargs):
        seen.setdefault('sources', []).append(source_model)
        return real_build(data_, pairs, source_model, *args, **kwargs)

    real_build = pipeline.build_lightgnn
    monkeypatch.setattr(pipeline, 'train_intermediate', stub)
    monkeypatch.setattr(pipeline, 'build_lightgnn', build)
    small = replace(CONFIG, final_epochs=1, select_source=select)
    out = run_lightgnn(data, teacher, small, ['lightgnn', 'no-intermediate'])
    assert [r.distilled_from for r in out.rows] == ['', 'teacher', source,
                                                    'teacher']
    expected = seen['model'] if source == 'intermediate' else teacher
    # the intermediate model's own, then the two students'
    assert seen['sources'] == [teacher, expected, teacher]
    assert f'| LightGNN | {source} |' in format_lightgnn_rows(out.rows)


@pytest.mark.parametrize('methods', [('lightgnn', 'bogus'), ()])
def test_unknown_method_is_an_error(data, teacher, methods):
    with pytest.raises(ValueError, match="'methods'"):
        run_lightgnn(data, teacher, CONFIG, methods)


def test_forward_calls_compute_the_final_embeddings(data, teacher, run):
    student = run.students['lightgnn']
    with torch.no_grad():
        want = student.eval().get_embedding()
    assert torch.allclose(forward_call(student, data)(), want, atol=1e-5)
    assert torch.allclose(forward_call(teacher, data)(),
                          torch.cat(lightgnn_embeddings(teacher, data)),
                          atol=1e-5)
    time_forwards(run, data, min_run_time=0.01)
    for row in run.rows:
        assert 0 < row.forward_seconds < 1, row.method


def test_format_rows(run):
    text = format_lightgnn_rows(run.rows)
    for row in run.rows:
        assert row.label in text
    assert 'LightGCN teacher (2 layers)' in text
    assert '~BothP (random both)' in text
    assert '-IntKD (no intermediate KD layer)' in text
    assert len(text.strip().splitlines()) == 2 + len(run.rows)


def test_plot_writes_a_png(run, tmp_path):
    pytest.importorskip('matplotlib')
    path = tmp_path / 'lightgnn.png'
    plot_lightgnn_rows(run.rows, str(path), 'a title')
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


# Augmented graph, bytes, ablations ###########################################


def test_augmented_pairs_keep_training_pairs_first(data):
    E = data.train.size(1)
    pairs = augmented_pairs(data, hops=3, max_per_node=None)
    assert torch.equal(pairs[:, :E], data.train)
    keys = (pairs[0] * data.num_items + pairs[1]).tolist()
    assert len(set(keys)) == len(keys)  # no pair twice
    # the new pairs are exactly those linked by a path of <= 3 hops
    A = torch.zeros(data.num_nodes, data.num_nodes, dtype=torch.float64)
    A[data.train[0], data.num_users + data.train[1]] = 1
    A = A + A.t() + torch.eye(data.num_nodes, dtype=torch.float64)
    reach = torch.linalg.matrix_power(A, 3)[:data.num_users,
                                            data.num_users:]
    train = set(map(tuple, data.train.t().tolist()))
    want = {(u, i) for u, i in reach.nonzero().tolist()} - train
    new = set(map(tuple, pairs[:, E:].t().tolist()))
    assert new == want and len(new) > 0
    # hops = 1 adds nothing; max_per_node caps each user's new pairs
    assert torch.equal(augmented_pairs(data, hops=1), data.train)
    capped = augmented_pairs(data, hops=3, max_per_node=2)
    assert torch.equal(capped[:, :E], data.train)
    capped_new = capped[:, E:]
    assert set(map(tuple, capped_new.t().tolist())) <= want
    assert torch.bincount(capped_new[0]).max() <= 2
    assert capped_new.size(1) == sum(min(2, sum(1 for u, _ in want
                                                 if u == user))
                                     for user in range(data.num_users))


def test_lightgcn_nbytes_by_hand():
    # float32 table + int32 row pointers + uint16 item ids
    assert lightgcn_nbytes(10, 20, 4, 30) == 30 * 4 * 4 + 10 * 4 + 30 * 2
    # more than 65,536 items: int32 item ids
    assert lightgcn_nbytes(1, 70000, 1, 5) == 70001 * 4 + 4 + 5 * 4


def test_ablations_are_config_changes():
    assert list(ABLATIONS) == ['lightgnn', 'random-emb', 'random-edge',
                               'random-both', 'binary-edge', 'no-bilevel',
                               'no-intermediate', 'no-importance']
    assert ABLATIONS['lightgnn'][1] == {}
    for label, changes in ABLATIONS.values():
        changed = replace(LightGNNConfig(), **changes)
        assert all(getattr(changed, k) == v for k, v in changes.items())
        assert label
