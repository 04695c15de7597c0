import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
import torch_geometric.typing
from torch_geometric.nn.models import GraphSAGE

from pyg_qgnn.train import distributed
from pyg_qgnn.train.distributed import DistributedContext
from pyg_qgnn.train.sampled import train_sampled
from tests.train.test_sampled import planted_graph

needs_sampler = pytest.mark.skipif(
    not (torch_geometric.typing.WITH_PYG_LIB
         or torch_geometric.typing.WITH_TORCH_SPARSE),
    reason='NeighborLoader needs pyg-lib or torch_sparse')


@pytest.fixture
def no_torchrun(monkeypatch):
    for key in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(key, raising=False)


def test_without_torchrun_it_is_one_process(no_torchrun):
    with distributed.session('cpu') as context:
        assert context == DistributedContext()
        assert context.is_main and not context.distributed
        assert distributed.all_reduce_sums([1, 2.5], context) == [1.0, 2.5]
        model = torch.nn.Linear(2, 2)
        assert distributed.wrap(model, context) is model
        assert distributed.unwrap(model) is model
        ran = []
        with distributed.rank_zero_first(context):
            ran.append(True)
        assert ran == [True]
    assert not torch.distributed.is_initialized()


def test_a_world_of_one_creates_no_group(monkeypatch):
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    with distributed.session() as context:
        assert not context.distributed
        assert not torch.distributed.is_initialized()


@pytest.mark.parametrize('env,match', [
    (dict(RANK='one'), 'RANK must be an integer'),
    (dict(RANK='2', WORLD_SIZE='2'), r'0 <= RANK < WORLD_SIZE'),
    (dict(WORLD_SIZE='0'), 'WORLD_SIZE'),
])
def test_bad_torchrun_variables_are_named(no_torchrun, monkeypatch, env,
                                          match):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=match):
        distributed.init_distributed()


def test_bad_device_is_named(no_torchrun):
    with pytest.raises(ValueError, match="'device' must be one of"):
        distributed.init_distributed('tpu')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'device' is 'cuda'"):
            distributed.init_distributed('cuda')


def test_training_shards_cover_every_node_with_equal_steps():
    shards = []
    for rank in range(3):
        context = DistributedContext(rank=rank, world_size=3)
        sampler = distributed.training_sampler(10, context, seed=5)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    assert [len(s) for s in shards] == [4, 4, 4]  # padded: equal steps
    assert set().union(*shards) == set(range(10))
    again = distributed.training_sampler(
        10, DistributedContext(rank=0, world_size=3), seed=5)
    again.set_epoch(2)
    assert list(again) == shards[0]  # every process agrees on the order
    again.set_epoch(3)
    assert list(again) != shards[0]  # a fresh shuffle per epoch


def test_more_processes_than_training_nodes_is_an_error():
    context = DistributedContext(rank=0, world_size=4)
    with pytest.raises(ValueError, match=r'4 processes \(torchrun '
                       r'--nproc_per_node\) but only 3 training nodes'):
        distributed.check_world_size(3, context)
    with pytest.raises(ValueError, match='--nproc_per_node'):
        distributed.training_sampler(3, context)
    with pytest.raises(ValueError, match="'num_items'"):
        distributed.check_world_size(0, DistributedContext())


def test_evaluation_shards_are_exact():
    index = torch.arange(7)
    parts = [distributed.shard(index, DistributedContext(rank=r, world_size=3))
             for r in range(3)]
    assert torch.equal(torch.cat(parts), index)
    tiny = [distributed.shard(index[:1], DistributedContext(rank=r,
                                                            world_size=2))
            for r in range(2)]
    assert [t.numel() for t in tiny] == [1, 0]


# Two real processes (gloo) ##################################################

def fixed_batch():
    gen = torch.Generator().manual_seed(3)
    return torch.randn(8, 4, generator=gen), torch.randint(2, (8, ),
                                                           generator=gen)


def linear_step(model, x, y):
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    with torch.no_grad():
        for param in distributed.unwrap(model).parameters():
            param -= 0.1 * param.grad
    return {k: v.clone() for k, v in distributed.unwrap(model)
            .state_dict().items()}


def _worker(rank: int, world_size: int, port: int, out: str):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank), MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    results = {}
    with distributed.session('cpu') as context:
        results['context'] = (context.rank, context.world_size,
                              context.backend)
        marker = Path(out) / 'marker'
        with distributed.rank_zero_first(context):
            if context.is_main:
                time.sleep(0.5)  # the others would see nothing if not held
                marker.write_text('rank 0')
            results['saw_marker'] = marker.exists()
        results['sums'] = distributed.all_reduce_sums([rank + 1, 10], context)
        # DDP averages the gradients of the two halves of one batch.
        torch.manual_seed(0)
        model = distributed.wrap(torch.nn.Linear(4, 2), context)
        x, y = fixed_batch()
        half = distributed.shard(torch.arange(8), context)
        results['linear'] = linear_step(model, x[half], y[half])
        # The sampled loop, each process on its shard of the training nodes.
        data, split = planted_graph(200)
        torch.manual_seed(0)
        sage = GraphSAGE(8, 8, 2, 3)
        result = train_sampled(sage, data, split['train'], split['valid'],
                               [3, 3], epochs=2, batch_size=16,
                               context=context)
        results['sage'] = sage.state_dict()
        results['history'] = [(h['loss'], h['train_acc'], h['val_acc'])
                              for h in result.history]
        results['epoch'] = result.epoch
    results['after_teardown'] = torch.distributed.is_initialized()
    torch.save(results, Path(out) / f'rank{rank}.pt')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _spawn(fn, nprocs: int, args: tuple, timeout: float = 120.0):
    context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False,
                                 start_method='spawn')
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f'{nprocs} processes did not finish in {timeout} s')


@needs_sampler
def test_two_gloo_processes_train_as_one_model(tmp_path):
    _spawn(_worker, 2, (2, _free_port(), str(tmp_path)))
    ranks = [torch.load(tmp_path / f'rank{r}.pt') for r in range(2)]
    assert [r['context'] for r in ranks] == [(0, 2, 'gloo'), (1, 2, 'gloo')]
    assert [r['saw_marker'] for r in ranks] == [True, True]
    assert [r['sums'] for r in ranks] == [[3.0, 20.0], [3.0, 20.0]]
    assert [r['after_teardown'] for r in ranks] == [False, False]
    # One DDP step on two halves = one step on the whole batch.
    torch.manual_seed(0)
    expected = linear_step(torch.nn.Linear(4, 2), *fixed_batch())
    for rank in ranks:
        for key, value in expected.items():
            assert torch.allclose(rank['linear'][key], value, atol=1e-6)
    # Both processes end with the same model, curve and selected epoch.
    for key, value in ranks[0]['sage'].items():
        assert torch.equal(ranks[1]['sage'][key], value)
    assert ranks[0]['history'] == ranks[1]['history']
    assert ranks[0]['epoch'] == ranks[1]['epoch']
