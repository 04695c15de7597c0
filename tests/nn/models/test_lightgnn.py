import pytest
import safetensors.torch
import torch

from pyg_qgnn.nn.models.lightgnn import LightGNN, lightgcn_forward_flops

U, I, D = 7, 5, 6
# 15 unique (user, item) pairs; user 6 and item 4 have no interaction.
PAIRS = torch.tensor([(0, 0), (0, 1), (0, 3), (1, 0), (1, 2), (2, 1),
                      (2, 2), (2, 3), (3, 0), (3, 3), (4, 1), (4, 2),
                      (5, 0), (5, 3), (3, 2)]).t()
ALPHA = torch.tensor([0.5, 0.25, 0.125], dtype=torch.float64)  # exact
# Prunes both edges of user 5 (then isolated) and one edge of user 0.
EDGE_MASK = torch.ones(PAIRS.size(1), dtype=torch.bool)
EDGE_MASK[[1, 12, 13]] = False

pytestmark = pytest.mark.usefixtures('one_thread')


def make_model(seed=0, pairs=PAIRS, double=True, **kwargs):
    torch.manual_seed(seed)
    kwargs.setdefault('alpha', ALPHA)
    model = LightGNN(U, I, pairs, embedding_dim=D, num_layers=2, **kwargs)
    if double:
        model = model.double()
    if model.learn_edge_weight:
        with torch.no_grad():  # weights away from one: they must matter
            model.edge_weight.copy_(torch.rand(pairs.size(1)) + 0.5)
    return model


def dense_reference(pairs, weight, edge_mask, emb, alpha, num_layers=2,
                    residual=True, value_dtype=None):
    r"""Eq. 4 with a dense float64 adjacency, plus the layer sum; with
    :obj:`value_dtype`, the values rounded to it (gradient straight
    through)."""
    kept, w = pairs[:, edge_mask], weight[edge_mask]
    du = torch.bincount(kept[0], minlength=U).double()
    di = torch.bincount(kept[1], minlength=I).double()
    values = w / torch.sqrt(du[kept[0]] * di[kept[1]])
    if value_dtype is not None:
        rounded = values.detach().to(value_dtype).double()
        values = rounded + (values - values.detach())
    adj = torch.zeros(U + I, U + I, dtype=torch.float64)
    adj = adj.index_put((kept[0], U + kept[1]), values)
    adj = adj.index_put((U + kept[1], kept[0]), values)
    x, out = emb, alpha[0] * emb
    for layer in range(num_layers):
        x = adj @ x + x if residual else adj @ x
        out = out + alpha[layer + 1] * x
    return out


def random_entry_mask(seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(U + I, D, generator=gen) > 0.3


@pytest.mark.parametrize('residual', [True, False])
def test_embedding_equals_dense_eq_4(residual):
    model = make_model(residual=residual)
    with torch.no_grad():
        out = model.get_embedding()
    emb = model.raw_embedding.detach()
    ref = dense_reference(PAIRS, model.edge_weight.detach(),
                          torch.ones_like(EDGE_MASK), emb, ALPHA,
                          residual=residual)
    assert out.dtype == torch.float64 and out.shape == (U + I, D)
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    # Isolated user 6 and item 4: a zero row of A.
    for node in (6, U + 4):
        expected = ALPHA.sum() * emb[node] if residual else ALPHA[0] * emb[
            node]
        assert torch.allclose(out[node], expected, atol=1e-15, rtol=0)
    # The residual matters: the two variants differ on connected nodes.
    other = make_model(residual=not residual)
    with torch.no_grad():
        assert not torch.allclose(other.get_embedding()[:6], out[:6])


def test_default_alpha_is_the_layer_mean():
    model = LightGNN(U, I, PAIRS, embedding_dim=D, num_layers=3)
    assert torch.allclose(model.alpha, torch.full((4, ), 0.25))
    assert model.alpha.dtype == torch.float32
    scalar = LightGNN(U, I, PAIRS, embedding_dim=D, num_layers=1, alpha=0.5)
    assert scalar.alpha.tolist() == [0.5, 0.5]
    zero = LightGNN(U, I, PAIRS, embedding_dim=D, num_layers=0)
    with torch.no_grad():  # no layer: the (masked) table itself
        assert torch.equal(zero.get_embedding(), zero.embedding.weight)


def test_pruned_model_equals_dense_eq_4_with_kept_degrees():
    model = make_model()
    model.set_edge_mask(EDGE_MASK)
    model.set_entry_mask(random_entry_mask())
    with torch.no_grad():
        out = model.get_embedding()
    mask = model.entry_mask
    emb = model.raw_embedding.detach() * mask
    ref = dense_reference(PAIRS, model.edge_weight.detach(), EDGE_MASK, emb,
                          ALPHA)
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    # User 5 lost both edges: its output is its own (masked) embedding.
    assert torch.allclose(out[5], ALPHA.sum() * emb[5], atol=1e-15, rtol=0)
    # The same as a model built on the kept edges only.
    small = make_model(pairs=PAIRS[:, EDGE_MASK])
    small.load_state_dict(dict(
        model.state_dict(), pairs=PAIRS[:, EDGE_MASK],
        edge_weight=model.edge_weight.detach()[EDGE_MASK],
        edge_mask=torch.ones(int(EDGE_MASK.sum()), dtype=torch.bool)))
    with torch.no_grad():
        assert torch.allclose(small.get_embedding(), out, atol=1e-12, rtol=0)


def test_gradients_equal_the_dense_reference():
    model = make_model()
    model.set_edge_mask(EDGE_MASK)
    entry_mask = random_entry_mask()
    model.set_entry_mask(entry_mask)
    target = torch.randn(U + I, D, dtype=torch.float64)
    (model.get_embedding() * target).sum().backward()

    weight = model.edge_weight.detach().clone().requires_grad_()
    raw = model.raw_embedding.detach().clone().requires_grad_()
    ref = dense_reference(PAIRS, weight, EDGE_MASK, raw * entry_mask, ALPHA)
    (ref * target).sum().backward()

    assert torch.allclose(model.edge_weight.grad, weight.grad, atol=1e-12,
                          rtol=0)
    assert torch.allclose(model.raw_embedding.grad, raw.grad, atol=1e-12,
                          rtol=0)
    # Pruned edges and entries get exactly zero gradient; kept ones do not.
    assert torch.all(model.edge_weight.grad[~EDGE_MASK] == 0)
    assert torch.all(model.edge_weight.grad[EDGE_MASK] != 0)
    assert torch.all(model.raw_embedding.grad[~entry_mask] == 0)
    assert model.raw_embedding.grad[entry_mask].abs().min() > 0


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_rounded_edge_values(dtype):
    model = make_model(edge_value_dtype=dtype)
    model.set_edge_mask(EDGE_MASK)
    assert model.edge_value_dtype == dtype
    values = model.normalized_weight()
    assert torch.equal(values, values.to(dtype).double())  # representable
    exact = make_model()
    exact.set_edge_mask(EDGE_MASK)
    exact = exact.normalized_weight()
    assert not torch.equal(values, exact)  # the rounding happened
    assert torch.allclose(values, exact, rtol=2 ** -7, atol=0)
    # Training and evaluation compute the same numbers; both equal Eq. 4
    # with the rounded values, and the gradient passes straight through.
    target = torch.randn(U + I, D, dtype=torch.float64)
    out = model.train().get_embedding()
    (out * target).sum().backward()
    with torch.no_grad():
        assert torch.equal(model.eval().get_embedding(), out.detach())
    weight = model.edge_weight.detach().clone().requires_grad_()
    ref = dense_reference(PAIRS, weight, EDGE_MASK,
                          model.raw_embedding.detach(), ALPHA,
                          value_dtype=dtype)
    (ref * target).sum().backward()
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    assert torch.allclose(model.edge_weight.grad, weight.grad, atol=1e-12,
                          rtol=0)
    assert torch.all(model.edge_weight.grad[EDGE_MASK] != 0)
    # By name too, as configs and files give it.
    named = make_model(edge_value_dtype=str(dtype).split('.')[-1])
    assert named.edge_value_dtype == dtype


def test_gradient_of_embedding_only():
    model = make_model(learn_edge_weight=False)
    target = torch.randn(U + I, D, dtype=torch.float64)
    (model.get_embedding() * target).sum().backward()
    raw = model.raw_embedding.detach().clone().requires_grad_()
    ref = dense_reference(PAIRS, torch.ones(15, dtype=torch.float64),
                          torch.ones_like(EDGE_MASK), raw, ALPHA)
    (ref * target).sum().backward()
    assert torch.allclose(model.raw_embedding.grad, raw.grad, atol=1e-12,
                          rtol=0)


def test_pruned_edges_and_entries_have_no_effect():
    model = make_model()
    model.set_edge_mask(EDGE_MASK)
    entry_mask = random_entry_mask()
    model.set_entry_mask(entry_mask)
    with torch.no_grad():
        out = model.get_embedding()
        # Pruned entries read as zero (the stored values are kept).
        assert torch.all(model.embedding.weight[~entry_mask] == 0)
        assert torch.all(model.raw_embedding[~entry_mask] != 0)
        model.edge_weight[~EDGE_MASK] = 1e3
        model.raw_embedding[~entry_mask] = -1e3
        assert torch.equal(model.get_embedding(), out)
        model.edge_weight[0] = 1e3  # a kept edge does change it
        assert not torch.allclose(model.get_embedding(), out)


def test_pair_order_and_node_labels_do_not_matter():
    model = make_model()
    with torch.no_grad():
        out = model.get_embedding()
        perm = torch.randperm(PAIRS.size(1), generator=torch.Generator()
                              .manual_seed(3))
        shuffled = make_model(pairs=PAIRS[:, perm])
        shuffled.edge_weight.copy_(model.edge_weight[perm])
        shuffled.raw_embedding.copy_(model.raw_embedding)
        assert torch.allclose(shuffled.get_embedding(), out, atol=1e-14,
                              rtol=0)

        pu, pi = torch.randperm(U), torch.randperm(I)  # old -> new ids
        relabeled = make_model(pairs=torch.stack([pu[PAIRS[0]],
                                                  pi[PAIRS[1]]]))
        relabeled.edge_weight.copy_(model.edge_weight)
        node = torch.cat([pu, U + pi])
        relabeled.raw_embedding[node] = model.raw_embedding
        assert torch.allclose(relabeled.get_embedding()[node], out,
                              atol=1e-14, rtol=0)


def test_fixed_edge_weight_is_a_buffer_of_ones():
    model = LightGNN(U, I, PAIRS, embedding_dim=D, learn_edge_weight=False)
    assert 'edge_weight' in dict(model.named_buffers())
    assert 'edge_weight' not in dict(model.named_parameters())
    assert torch.equal(model.edge_weight, torch.ones(PAIRS.size(1)))
    learned = LightGNN(U, I, PAIRS, embedding_dim=D)
    assert isinstance(learned.edge_weight, torch.nn.Parameter)
    assert torch.equal(learned.edge_weight.detach(),
                       torch.ones(PAIRS.size(1)))
    assert {name for name, _ in learned.named_parameters()} == {
        'edge_weight', 'embedding.parametrizations.weight.original'}


def test_forward_is_the_dot_product():
    model = make_model()
    index = torch.tensor([[0, 6, 3, 3], [4, 0, 2, 1]])
    with torch.no_grad():
        out = model.get_embedding()
        scores = model(index)
    expected = torch.stack([out[u] @ out[U + i] for u, i in index.t()])
    assert scores.shape == (4, )
    assert torch.allclose(scores, expected, atol=1e-14, rtol=0)


def test_errors():
    with pytest.raises(ValueError, match="'pairs'"):
        LightGNN(U, I, PAIRS[0])
    with pytest.raises(ValueError, match="'pairs'"):
        LightGNN(U, I, torch.cat([PAIRS, PAIRS[:1]]))
    with pytest.raises(ValueError, match="'pairs'"):
        LightGNN(U, I, [[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="'pairs'.*integer"):
        LightGNN(U, I, PAIRS.float())
    with pytest.raises(ValueError, match="'pairs'.*integer"):
        LightGNN(U, I, PAIRS.bool())
    bad = PAIRS.clone()
    bad[0, 2] = U
    with pytest.raises(ValueError, match="'pairs' has user ids"):
        LightGNN(U, I, bad)
    bad = PAIRS.clone()
    bad[1, 3] = -1
    with pytest.raises(ValueError, match="'pairs' has item ids"):
        LightGNN(U, I, bad)
    with pytest.raises(ValueError, match="'num_layers'"):
        LightGNN(U, I, PAIRS, num_layers=-1)
    with pytest.raises(ValueError, match="'num_users'"):
        LightGNN(0, I, PAIRS)
    with pytest.raises(ValueError, match="'alpha'"):
        LightGNN(U, I, PAIRS, num_layers=2, alpha=torch.ones(2))
    for dtype in (torch.float64, torch.int8, 'half', None):
        with pytest.raises(ValueError, match="'edge_value_dtype' must be "
                           "one of \\['float32', 'float16', 'bfloat16'\\]"):
            LightGNN(U, I, PAIRS, edge_value_dtype=dtype)

    model = LightGNN(U, I, PAIRS, embedding_dim=D)
    with pytest.raises(ValueError, match="'mask'"):
        model.set_edge_mask(torch.ones(PAIRS.size(1)))
    with pytest.raises(ValueError, match="'mask'"):
        model.set_edge_mask(torch.ones(PAIRS.size(1) - 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="'mask'"):
        model.set_entry_mask(torch.ones(U + I, D, dtype=torch.uint8))
    with pytest.raises(ValueError, match="'mask'"):
        model.set_entry_mask(torch.ones(U + I, D + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="'table'"):
        model.load_embedding(torch.zeros(U + I, D - 1))
    assert bool(model.edge_mask.all()) and bool(model.entry_mask.all())


def test_load_embedding_respects_the_entry_mask():
    model = LightGNN(U, I, PAIRS, embedding_dim=D)
    mask = random_entry_mask()
    model.set_entry_mask(mask)
    table = torch.randn(U + I, D)
    model.load_embedding(table)
    assert torch.equal(model.raw_embedding.detach(), table)
    assert torch.equal(model.embedding.weight.detach(), table * mask)


def pruned_model():
    model = make_model(double=False)
    model.set_edge_mask(EDGE_MASK)
    model.set_entry_mask(random_entry_mask())
    return model


def fresh_model():
    fresh = LightGNN(U, I, PAIRS, embedding_dim=D, alpha=ALPHA)
    with torch.no_grad():
        fresh.get_embedding()  # fills the adjacency cache: must go stale
    return fresh


def check_same(model, fresh):
    assert torch.equal(fresh.edge_mask, model.edge_mask)
    assert torch.equal(fresh.entry_mask, model.entry_mask)
    assert torch.equal(fresh.raw_embedding, model.raw_embedding)
    assert torch.equal(fresh.edge_weight, model.edge_weight)
    assert fresh.adjacency().nnz == 2 * int(EDGE_MASK.sum())
    with torch.no_grad():
        assert torch.equal(fresh.get_embedding(), model.get_embedding())


def test_masks_survive_safetensors(tmp_path):
    model = pruned_model()
    path = tmp_path / 'lightgnn.safetensors'
    safetensors.torch.save_file(model.state_dict(), path)
    fresh = fresh_model()
    fresh.load_state_dict(safetensors.torch.load_file(path))
    check_same(model, fresh)


def test_masks_survive_torch_save(tmp_path):
    model = pruned_model()
    path = tmp_path / 'lightgnn.pt'
    torch.save(model.state_dict(), path)
    fresh = fresh_model()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    check_same(model, fresh)


def test_adjacency_cache_follows_the_edge_mask():
    model = make_model()
    with torch.no_grad():
        full = model.get_embedding()
        assert model.adjacency().nnz == 2 * PAIRS.size(1)
        assert model.adjacency() is model.adjacency()  # cached
        model.set_edge_mask(EDGE_MASK)
        assert model.adjacency().nnz == 2 * int(EDGE_MASK.sum())
        ref = dense_reference(PAIRS, model.edge_weight, EDGE_MASK,
                              model.raw_embedding, ALPHA)
        assert torch.allclose(model.get_embedding(), ref, atol=1e-12, rtol=0)
        model.edge_mask[4] = False  # an in-place edit is seen too
        assert model.adjacency().nnz == 2 * (int(EDGE_MASK.sum()) - 1)
        model.set_edge_mask(torch.ones_like(EDGE_MASK))
        assert torch.equal(model.get_embedding(), full)


def test_forward_flops_by_hand():
    # N = 12 nodes, 30 directed entries, d = 4, L = 2: 2 * 30 * 4 = 240
    # per layer, 12 * 4 = 48 per residual, 2 * 12 * 4 = 96 per layer term.
    assert lightgcn_forward_flops(12, 30, 4, 2, residual=True) == \
        2 * (240 + 48) + 3 * 96
    assert lightgcn_forward_flops(12, 30, 4, 2) == 2 * 240 + 3 * 96
    assert lightgcn_forward_flops(12, 30, 4, 0, residual=True) == 96
    model = make_model()
    model.set_edge_mask(EDGE_MASK)  # 12 kept pairs: 24 directed entries
    assert model.forward_flops() == 2 * (2 * 24 * D + 12 * D) + 3 * 2 * 12 * D
    no_res = make_model(residual=False)
    assert no_res.forward_flops() == 2 * 2 * 30 * D + 3 * 2 * 12 * D


def test_repr_shows_what_is_kept():
    model = make_model()
    model.set_edge_mask(EDGE_MASK)
    mask = random_entry_mask()
    model.set_entry_mask(mask)
    text = repr(model)
    assert 'edges=12/15' in text
    assert f'entries={int(mask.sum())}/{(U + I) * D}' in text
    assert text.startswith(f'LightGNN({U}, {I}, dim={D}, num_layers=2')
    assert text.endswith('edge_value_dtype=float32)')
    assert 'edge_value_dtype=float16' in repr(
        make_model(edge_value_dtype='float16'))


def test_pairs_are_the_models_own_copy():
    pairs = PAIRS[:, :10].contiguous()
    a = make_model(pairs=pairs)
    b = make_model(pairs=pairs)
    other = torch.stack([PAIRS[0, 5:], PAIRS[1, 5:]])  # other 10 pairs
    with torch.no_grad():
        before = b.get_embedding().clone()
        a.get_embedding()  # fills a's adjacency cache
    a.load_state_dict(dict(a.state_dict(), pairs=other))
    # Neither the caller's tensor nor a model built from it changed.
    assert torch.equal(pairs, PAIRS[:, :10])
    assert torch.equal(b.pairs, PAIRS[:, :10])
    # a propagates over its new pairs: its cache was rebuilt.
    with torch.no_grad():
        assert torch.equal(b.get_embedding(), before)
        assert torch.allclose(a.get_embedding(), dense_reference(
            other, a.edge_weight, torch.ones(10, dtype=torch.bool),
            a.raw_embedding, ALPHA), atol=1e-12, rtol=0)
