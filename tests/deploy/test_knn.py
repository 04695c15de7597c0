"""Tests of the batched kNN graphs (pyg_qgnn.deploy.knn)."""
import pytest
import torch

import importlib

from pyg_qgnn.deploy import backend, hamming_knn, hamming_knn_graph, knn
from pyg_qgnn.deploy.backend import compile_native
from pyg_qgnn.nn.conv.knn_graph import knn_graph
from pyg_qgnn.quantizers.binary import pack_signs

# The module, not the function pyg_qgnn.deploy.knn that shadows it.
knn_module = importlib.import_module('pyg_qgnn.deploy.knn')

IMPLS = ['torch', 'faiss'] + (['native'] if backend().native else [])


def signs(num_points, bits, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (num_points, bits), generator=gen) * 2.0 - 1


def batch_of(sizes):
    return torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))


def brute_force(distance, num_points, k, batch=None, loop=False):
    r"""Edges (neighbour, centre), each centre's k nearest by (distance,
    index) within its cloud, from a Python sort."""
    batch = [0] * num_points if batch is None else batch.tolist()
    edges = []
    for i in range(num_points):
        candidates = [j for j in range(num_points) if batch[j] == batch[i]
                      and (loop or j != i)]
        candidates.sort(key=lambda j: (distance(i, j), j))
        edges += [(j, i) for j in candidates[:k]]
    return torch.tensor(edges, dtype=torch.long).reshape(-1, 2).t()


def hamming(x):
    return lambda i, j: int((x[i] != x[j]).sum())


LAYOUTS = {
    'one cloud': [40],
    'unequal clouds': [7, 1, 25, 12, 3],
    'all smaller than k+1': [2, 5, 4],
}


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('layout', list(LAYOUTS))
@pytest.mark.parametrize('bits', [3, 13, 64, 70])
@pytest.mark.parametrize('loop', [False, True])
def test_hamming_knn_equals_brute_force(impl, layout, bits, loop):
    sizes = LAYOUTS[layout]
    x = signs(sum(sizes), bits, seed=bits)  # bits=3: ties everywhere
    batch = batch_of(sizes)
    k = 5
    out = hamming_knn(pack_signs(x), k, batch, num_bits=bits, loop=loop,
                      impl=impl)
    expected = brute_force(hamming(x), x.size(0), k, batch, loop)
    assert out.dtype == torch.long
    assert torch.equal(out, expected)


@pytest.mark.parametrize('impl', IMPLS)
def test_small_clouds_get_all_their_points(impl):
    x = signs(9, 16)
    batch = batch_of([1, 3, 5])
    out = hamming_knn(pack_signs(x), 20, batch, num_bits=16, impl=impl)
    degree = torch.bincount(out[1], minlength=9)
    # PyG's knn_graph(loop=False): min(k, n - 1) neighbours per point.
    assert degree.tolist() == [0] + [2] * 3 + [4] * 5
    assert bool((batch[out[0]] == batch[out[1]]).all())
    assert bool((out[0] != out[1]).all())
    looped = hamming_knn(pack_signs(x), 20, batch, num_bits=16, loop=True,
                         impl=impl)
    assert torch.bincount(looped[1]).tolist() == [1] + [3] * 3 + [5] * 5


def test_batch_ids_may_skip_values():
    x = signs(12, 8)
    skipping = torch.tensor([0] * 4 + [3] * 8)
    dense = batch_of([4, 8])
    assert torch.equal(hamming_knn(pack_signs(x), 3, skipping),
                       hamming_knn(pack_signs(x), 3, dense))


@pytest.mark.parametrize('impl', IMPLS)
def test_each_cloud_as_if_alone(impl):
    sizes = [30, 17, 25]
    x = signs(sum(sizes), 24, seed=3)
    out = hamming_knn(pack_signs(x), 6, batch_of(sizes), impl=impl)
    start = 0
    for size in sizes:
        alone = hamming_knn(pack_signs(x[start:start + size]), 6, impl=impl)
        mine = out[:, (out[1] >= start) & (out[1] < start + size)]
        assert torch.equal(mine, alone + start)
        start += size


@pytest.mark.parametrize('impl', IMPLS)
def test_distances_are_permutation_invariant_within_a_cloud(impl):
    # Ties may pick other neighbours after a permutation, but each point's
    # sorted neighbour distances cannot change.
    x = signs(50, 10, seed=5)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))

    def profile(points):
        edges = hamming_knn(pack_signs(points), 7, impl=impl)
        dist = (points[edges[0]] != points[edges[1]]).sum(-1)
        return dist.view(-1, 7)

    assert torch.equal(profile(x)[perm], profile(x[perm]))


@pytest.mark.parametrize('impl', IMPLS[1:])
@pytest.mark.parametrize('sizes', [[64] * 12 + [33, 2, 1], [300]])
def test_fast_paths_equal_reference_with_any_threads(impl, sizes):
    x = signs(sum(sizes), 64, seed=7)
    batch = batch_of(sizes)
    reference = hamming_knn(pack_signs(x), 20, batch, impl='torch')
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3):  # one search at a time, or split up
            torch.set_num_threads(count)
            assert torch.equal(
                hamming_knn(pack_signs(x), 20, batch, impl=impl), reference)
    finally:
        torch.set_num_threads(threads)


def test_auto_uses_the_backend_path():
    found = backend()
    assert found.hamming_knn == ('native' if found.native else
                                 'faiss' if found.faiss else 'torch')


def test_native_build_is_cached_and_optional(monkeypatch):
    if not backend().native:
        pytest.skip('no C compiler here')
    source = knn_module._NATIVE_SOURCE
    assert compile_native('hamming_knn', source) is not None
    # A second build loads the cached library without compiling.
    monkeypatch.setattr('subprocess.run', lambda *a, **k: 1 / 0)
    assert compile_native('hamming_knn', source) is not None
    monkeypatch.setenv('CC', 'no-such-compiler-here')
    assert compile_native('hamming_knn', source) is None


def test_codes_too_wide_for_native_fall_back(monkeypatch):
    if not backend().native:
        pytest.skip('no C compiler here')
    monkeypatch.setattr(knn_module, 'NATIVE_MAX_BITS', 64)
    x = signs(30, 72)
    expected = hamming_knn(pack_signs(x), 4, impl='torch')
    assert torch.equal(hamming_knn(pack_signs(x), 4), expected)
    with pytest.raises(ValueError, match='at most 64 bits'):
        hamming_knn(pack_signs(x), 4, impl='native')


# Float kNN ###################################################################


@pytest.mark.parametrize('loop', [False, True])
@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_float_knn_equals_brute_force(layout, loop):
    sizes = LAYOUTS[layout]
    gen = torch.Generator().manual_seed(1)
    # Small integer coordinates: exact distances and many ties.
    x = torch.randint(-2, 3, (sum(sizes), 3), generator=gen).float()
    batch = batch_of(sizes)

    def squared(i, j):
        return float(((x[i] - x[j])**2).sum())

    out = knn(x, 4, batch, loop=loop)
    assert torch.equal(out, brute_force(squared, x.size(0), 4, batch, loop))


@pytest.mark.parametrize('loop', [False, True])
def test_float_metrics_on_signs_equal_hamming(loop):
    sizes = [20, 9, 31]
    x = signs(sum(sizes), 21, seed=2)
    batch = batch_of(sizes)
    expected = hamming_knn(pack_signs(x), 6, batch, num_bits=21, loop=loop)
    for metric in ('l2', 'xor'):
        assert torch.equal(knn(x, 6, batch, loop=loop, metric=metric),
                           expected)


def test_float_knn_orders_negative_inner_products():
    # Eq. 21 on real features can be negative; order must still hold.
    x = torch.tensor([[2.0, 0.0], [-3.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    out = knn(x, 3, metric='xor', loop=True)
    # Centre 0: (d - x0.xj) / 2 = 1 - xj0 -> j=0: -1, j=1: 4, j=2: 0, j=3: 0.5
    assert out[0, :3].tolist() == [0, 2, 3]


def test_matches_the_dynamic_layers_graph():
    sizes = [25, 40]
    x = signs(sum(sizes), 32, seed=4)
    batch = batch_of(sizes)
    expected = knn_graph(x, 8, batch, metric='xor', binary=True)
    assert torch.equal(hamming_knn_graph(x, 8, batch), expected)
    assert torch.equal(hamming_knn(pack_signs(x), 8, batch, loop=True),
                       expected)


def test_empty_input_gives_no_edges():
    out = hamming_knn(torch.zeros(0, 2, dtype=torch.uint8), 3)
    assert out.shape == (2, 0) and out.dtype == torch.long
    assert knn(torch.zeros(0, 4), 3).shape == (2, 0)


# Bad input ###################################################################


@pytest.mark.parametrize('k,error', [(0, ValueError), (-3, ValueError),
                                     (2.0, TypeError), (True, TypeError)])
def test_bad_k(k, error):
    with pytest.raises(error, match="'k'"):
        hamming_knn(pack_signs(signs(4, 8)), k)
    with pytest.raises(error, match="'k'"):
        knn(signs(4, 8), k)


@pytest.mark.parametrize('batch,message', [
    (torch.tensor([0, 1, 0, 1]), 'sorted'),
    (torch.tensor([0, 0, 1]), 'shape'),
    (torch.zeros(4, 2, dtype=torch.long), 'shape'),
])
def test_bad_batch(batch, message):
    with pytest.raises(ValueError, match=f"'batch'.*{message}"):
        hamming_knn(pack_signs(signs(4, 8)), 2, batch)
    with pytest.raises(ValueError, match=f"'batch'.*{message}"):
        knn(signs(4, 8), 2, batch)


def test_float_batch_is_rejected():
    with pytest.raises(TypeError, match="'batch'"):
        hamming_knn(pack_signs(signs(4, 8)), 2, torch.zeros(4))


def test_bad_codes():
    with pytest.raises(TypeError, match="'codes_packed'.*uint8"):
        hamming_knn(signs(4, 8), 2)
    with pytest.raises(ValueError, match="'codes_packed'.*shape"):
        hamming_knn(torch.zeros(4, dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="'num_bits'"):
        hamming_knn(pack_signs(signs(4, 12)), 2, num_bits=17)
    padded = pack_signs(signs(4, 12))
    padded[0, -1] |= 0x80  # a bit beyond num_bits=12
    with pytest.raises(ValueError, match='padding'):
        hamming_knn(padded, 2, num_bits=12)
    with pytest.raises(ValueError, match="'impl'"):
        hamming_knn(pack_signs(signs(4, 8)), 2, impl='gpu')


def test_non_sign_and_nan_features():
    x = signs(5, 8)
    x[2, 3] = 0.5
    with pytest.raises(ValueError, match="'x'.*-1 and \\+1"):
        hamming_knn_graph(x, 2)
    x[2, 3] = float('nan')
    with pytest.raises(ValueError, match="'x'"):
        hamming_knn_graph(x, 2)
    with pytest.raises(ValueError, match="'x'.*NaN"):
        knn(x, 2)
    with pytest.raises(ValueError, match="'metric'"):
        knn(signs(5, 8), 2, metric='cosine')
    with pytest.raises(TypeError, match="'x'"):
        knn(torch.ones(5, 8, dtype=torch.long), 2)
