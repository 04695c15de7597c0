import math

import pytest
import torch

from pyg_qgnn.metrics import UserItems, ranking_metrics, top_k


def brute_force(user_emb, item_emb, truth, exclude, k):
    r"""Recall@k and NDCG@k by loops over users, the LightGCN definitions."""
    recalls, ndcgs = [], []
    for u in range(user_emb.size(0)):
        relevant = {int(i) for uu, i in truth.t().tolist() if uu == u}
        if not relevant:
            continue
        seen = {int(i) for uu, i in exclude.t().tolist() if uu == u}
        scores = [(float(user_emb[u] @ item_emb[i]), i)
                  for i in range(item_emb.size(0)) if i not in seen]
        ranked = [i for _, i in sorted(scores, key=lambda s: -s[0])][:k]
        hits = [1.0 if i in relevant else 0.0 for i in ranked]
        recalls.append(sum(hits) / len(relevant))
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(k,
                                                           len(relevant))))
        ndcgs.append(dcg / idcg)
    return sum(recalls) / len(recalls), sum(ndcgs) / len(ndcgs)


def random_case(num_users=13, num_items=17, dim=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    user_emb = torch.randn(num_users, dim, generator=gen)
    item_emb = torch.randn(num_items, dim, generator=gen)
    pairs = torch.stack([torch.randint(num_users, (60, ), generator=gen),
                         torch.randint(num_items, (60, ), generator=gen)])
    pairs = torch.unique(pairs, dim=1)
    split = torch.rand(pairs.size(1), generator=gen) < 0.6
    return user_emb, item_emb, pairs[:, split], pairs[:, ~split]


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('batch_size', [1, 4, 1024])
def test_metrics_equal_brute_force(seed, batch_size):
    user_emb, item_emb, train, test = random_case(seed=seed)
    got = ranking_metrics(user_emb, item_emb, test, train, ks=(3, 5),
                          batch_size=batch_size)
    for k in (3, 5):
        recall, ndcg = brute_force(user_emb, item_emb, test, train, k)
        assert got[f'recall@{k}'] == pytest.approx(recall, abs=1e-6)
        assert got[f'ndcg@{k}'] == pytest.approx(ndcg, abs=1e-6)


def test_top_k_masks_training_items_and_orders_best_first():
    user_emb = torch.tensor([[1.0], [-1.0]])
    item_emb = torch.tensor([[3.0], [1.0], [2.0], [-2.0]])
    exclude = torch.tensor([[0, 1], [0, 3]])
    assert top_k(user_emb, item_emb, 2, exclude=exclude).tolist() == [
        [2, 1], [1, 2]]
    assert top_k(user_emb, item_emb, 1, users=torch.tensor([1])).tolist() \
        == [[3]]


def test_perfect_and_empty_rankings():
    user_emb = torch.eye(3)
    item_emb = torch.eye(3)
    truth = torch.tensor([[0, 1, 2], [0, 1, 2]])
    got = ranking_metrics(user_emb, item_emb, truth, ks=(1, ))
    assert got == {'recall@1': 1.0, 'ndcg@1': 1.0}
    # Users without held-out items do not count.
    got = ranking_metrics(user_emb, item_emb, truth[:, :1], ks=(1, ))
    assert got == {'recall@1': 1.0, 'ndcg@1': 1.0}


def test_k_larger_than_the_items_is_an_error():
    with pytest.raises(ValueError, match=r"'k' must be at most the number "
                       r"of items \(3\) \(got 4\)"):
        top_k(torch.eye(3), torch.eye(3), 4)
    with pytest.raises(ValueError, match="'ks'"):
        ranking_metrics(torch.eye(3), torch.eye(3),
                        torch.tensor([[0], [0]]), ks=(10, ))


def test_user_items_rows():
    items = UserItems(torch.tensor([[2, 0, 2, 1], [5, 6, 7, 8]]), 4)
    row, item = items.rows(torch.tensor([2, 3, 0]))
    assert row.tolist() == [0, 0, 2] and item.tolist() == [5, 7, 6]
    with pytest.raises(ValueError, match='out of range'):
        UserItems(torch.tensor([[5], [0]]), 3)


def test_user_items_from_grouped_rows_equal_the_pairs_form():
    pairs = torch.tensor([[0, 0, 2, 3], [6, 5, 7, 8]])  # grouped by user
    grouped = UserItems.from_rows(torch.tensor([2, 0, 1, 1]), pairs[1])
    reference = UserItems(pairs, 4)
    assert torch.equal(grouped.rowptr, reference.rowptr)
    users = torch.tensor([3, 0, 1, 2])
    for got, want in zip(grouped.rows(users), reference.rows(users)):
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="'counts' must sum"):
        UserItems.from_rows(torch.tensor([1, 1]), torch.tensor([4]))
