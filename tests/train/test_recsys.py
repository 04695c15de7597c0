import math

import pytest
import torch
import torch.nn.functional as F

from pyg_qgnn.datasets.recsys import synthetic_interactions
from pyg_qgnn.train.recsys import (
    TripleSampler,
    bpr_loss,
    compare_recommenders,
    evaluate_recommender,
    format_rec_rows,
    lambda_loss,
    lightgcn,
    load_pretrained,
    quantize_recommender,
    save_pretrained,
    train_recommender,
)


@pytest.fixture(scope='module')
def data():
    return synthetic_interactions(num_users=80, num_items=100,
                                  items_per_user=10, num_clusters=4)


def test_bpr_loss_is_eq_15():
    pos = torch.tensor([2.0, 0.5], requires_grad=True)
    neg = torch.tensor([[1.0], [1.5]], requires_grad=True)
    ego = torch.tensor([[1.0, 2.0], [0.0, 1.0]], requires_grad=True)
    loss = bpr_loss(pos, neg, ego, reg=0.1)
    expected = (-math.log(torch.sigmoid(torch.tensor(1.0))) -
                math.log(torch.sigmoid(torch.tensor(-1.0)))) / 2 + \
        0.1 * 6.0 / (2 * 2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.allclose(ego.grad, 0.1 * ego.detach() / 2)
    assert pos.grad.tolist() == pytest.approx(
        [-float(torch.sigmoid(torch.tensor(-1.0))) / 2,
         -float(torch.sigmoid(torch.tensor(1.0))) / 2])


def test_lambda_loss_binary_is_eq_16():
    scores = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 1.0]],
                          requires_grad=True)
    relevance = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    loss = lambda_loss(scores, relevance, weighting='binary')
    expected = 0.0
    for s, r in zip(scores.tolist(), relevance.tolist()):
        expected += sum(math.log(1 + math.exp(-(s[i] - s[j])))
                        for i in range(3) for j in range(3) if r[i] > r[j])
    assert loss.item() == pytest.approx(expected / 2, rel=1e-6)
    loss.backward()
    assert scores.grad[0, 0] < 0 < scores.grad[0, 1]  # the positive goes up


def test_lambda_loss_ndcg_weights_by_hand():
    scores = torch.tensor([[1.0, 3.0, 2.0]])
    relevance = torch.tensor([[1.0, 0.0, 0.0]])
    # Current ranks 2, 0, 1: discounts 1/log2(4), 1, 1/log2(3); IDCG 1.
    delta_1 = abs(0.5 - 1.0)
    delta_2 = abs(0.5 - 1 / math.log2(3))
    expected = delta_1 * F.softplus(torch.tensor(2.0)) + \
        delta_2 * F.softplus(torch.tensor(1.0))
    assert float(lambda_loss(scores, relevance)) == pytest.approx(
        float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="'weighting'"):
        lambda_loss(scores, relevance, weighting='map')
    with pytest.raises(ValueError, match='same shape'):
        lambda_loss(scores, relevance[:, :2])


def test_sampler_covers_pairs_once_and_avoids_positives(data):
    sampler = TripleSampler(data, batch_size=64, num_negatives=3, seed=1)
    users, items, negatives = map(torch.cat, zip(*sampler))
    assert len(sampler) == math.ceil(data.train.size(1) / 64)
    seen = set(map(tuple, data.train.t().tolist()))
    assert sorted(zip(users.tolist(), items.tolist())) == sorted(seen)
    assert negatives.shape == (users.numel(), 3)
    assert not any((u, i) in seen for u, row in zip(users.tolist(),
                                                    negatives.tolist())
                   for i in row)
    with pytest.raises(ValueError, match="'num_negatives'"):
        TripleSampler(data, 64, num_negatives=0)


def test_training_selects_on_validation(data):
    torch.manual_seed(0)
    model = lightgcn(data.num_users, data.num_items, 16, 2)
    before = evaluate_recommender(model, data, 'val')
    result = train_recommender(model, data, 6, lr=0.02, batch_size=128,
                               eval_every=2, select='ndcg@20')
    assert [h['epoch'] for h in result.history] == [2, 4, 6]
    best = max(result.history, key=lambda h: h['ndcg@20'])
    assert result.epoch == best['epoch']
    # The restored model is the selected one.
    assert evaluate_recommender(model, data, 'val') == pytest.approx(
        result.val, abs=1e-6)
    assert result.val['recall@20'] > before['recall@20']
    assert set(result.test) == {'recall@10', 'ndcg@10', 'recall@20',
                                'ndcg@20'}


def test_patience_and_time_budget_stop_early(data):
    model = lightgcn(data.num_users, data.num_items, 8, 1)
    result = train_recommender(model, data, 50, lr=1e-7, batch_size=512,
                               patience=1)
    assert result.epochs_run < 50
    result = train_recommender(model, data, 50, batch_size=512,
                               max_seconds=0.0)
    assert result.epochs_run == 1 and len(result.history) == 1


@pytest.mark.parametrize('kwargs,argument', [
    (dict(epochs=0), "'epochs'"),
    (dict(epochs=1, loss='mse'), "'loss'"),
    (dict(epochs=1, select='recall@50'), "'select'"),
    (dict(epochs=1, lr=0.0), "'lr'"),
])
def test_bad_training_arguments(data, kwargs, argument):
    model = lightgcn(data.num_users, data.num_items, 8, 1)
    with pytest.raises(ValueError, match=argument):
        train_recommender(model, data, **kwargs)


def test_compare_recommenders_rows_and_sizes(data):
    rows, curves = compare_recommenders(
        data, ['lsq', 'gnaq', 'gnaq-no-rau'], embedding_dim=64, bits=2,
        num_layers=2, epochs=2, finetune_epochs=1, batch_size=256,
        num_negatives=2, eval_every=1)
    assert [r.method for r in rows] == ['FP32 LightGCN', 'LSQ per-node '
                                        'uniform', 'GNAQ', 'GNAQ w/o RAU']
    float_bytes = data.num_nodes * 64 * 4
    assert rows[0].bytes == float_bytes
    # d b bits + 2^b FP8 levels per node: 16 + 4 bytes against 256.
    assert rows[2].bytes == data.num_nodes * 20
    assert float_bytes / rows[2].bytes >= 10
    assert {c['method'] for c in curves} == {'fp32', 'lsq', 'gnaq',
                                             'gnaq-no-rau'}
    table = format_rec_rows(rows)
    assert '| GNAQ | 2 | 64 |' in table and '12.8x' in table
    with pytest.raises(ValueError, match="'methods'"):
        compare_recommenders(data, ['n2uq'])


def test_pretrained_round_trip_and_dimension_check(data, tmp_path):
    model = lightgcn(data.num_users, data.num_items, 16, 2)
    path = str(tmp_path / 'float.safetensors')
    save_pretrained(model, path, data)
    loaded = load_pretrained(path, data, 16)
    assert torch.equal(loaded.embedding.weight, model.embedding.weight)
    with pytest.raises(ValueError, match='dimension 16 but the embedding '
                       'dimension asked for is 64'):
        load_pretrained(path, data, 64)
    with pytest.raises(ValueError, match="'method'"):
        quantize_recommender(model, 'fp32')
