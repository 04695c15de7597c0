"""Tests of DegreeQuantMask and the graph helpers of
pyg_qgnn.transforms.degree_quant_mask."""
import shutil

import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Batch, Data, HeteroData, InMemoryDataset
from torch_geometric.loader import DataLoader
from torch_geometric.utils import to_torch_csr_tensor

from pyg_qgnn.quantizers import protection_probability
from pyg_qgnn.transforms import (
    DegreeQuantMask,
    attach_protection_probability,
    edge_targets,
    graph_protection_probability,
    in_degree,
)
from tests.conftest import SHARED_DATA, has_shared


def small_graph(num_nodes=6, seed=0, integer=True):
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(num_nodes, (2, 3 * num_nodes), generator=gen)
    x = torch.randint(0, 5, (num_nodes, 3), generator=gen)
    return Data(x=x if integer else x.float(), edge_index=edge_index,
                y=torch.tensor([seed % 2]))


class IntegerGraphs(InMemoryDataset):
    r"""Graphs with integer node features and no transform."""
    def __init__(self, root):
        super().__init__(root)
        self.load(self.processed_paths[0])

    @property
    def processed_file_names(self):
        return ['data.pt']

    def process(self):
        self.save([small_graph(n, seed=n) for n in (5, 8, 6, 9)],
                  self.processed_paths[0])


def test_in_degree_and_targets():
    edge_index = torch.tensor([[0, 1, 3, 2], [1, 2, 2, 0]])
    assert in_degree(edge_index, 5).tolist() == [1, 1, 2, 0, 0]
    assert in_degree(edge_index).tolist() == [1, 1, 2]
    assert in_degree(edge_index, 4, flow='target_to_source').tolist() == \
        [1, 1, 1, 1]
    adj_t = to_torch_csr_tensor(edge_index.flip(0), size=(4, 4))
    assert in_degree(adj_t).tolist() == [1, 1, 2, 0]
    assert torch.equal(edge_targets(adj_t).sort().values,
                       edge_index[1].sort().values)
    with pytest.raises(ValueError, match="'flow'"):
        edge_targets(edge_index, 'sideways')


def test_transform_attaches_probability_and_casts_integer_features():
    data = small_graph()
    out = DegreeQuantMask(0.1, 0.4)(data)
    assert out.x.dtype == torch.get_default_dtype()
    expected = protection_probability(in_degree(data.edge_index, 6), 0.1, 0.4)
    assert torch.equal(out.degree_quant_prob, expected)
    # Layers that see this edge_index tensor use the attached numbers.
    assert graph_protection_probability(out.edge_index, 6, 0.0, 1.0) is \
        out.degree_quant_prob


def test_dataset_without_transform(tmp_path):
    dataset = IntegerGraphs(str(tmp_path))
    assert dataset.transform is None
    assert not dataset[0].x.is_floating_point()
    assert DegreeQuantMask().add_to(dataset) is dataset
    for i, data in enumerate(dataset):
        assert data.x.is_floating_point()
        expected = protection_probability(
            in_degree(data.edge_index, data.num_nodes))
        assert torch.equal(data.degree_quant_prob, expected), i
    # Loader batches keep every graph's own ranking.
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    parts = [data.degree_quant_prob for data in dataset]
    assert torch.equal(batch.degree_quant_prob, torch.cat(parts))


def test_dataset_with_a_transform_keeps_it(tmp_path):
    dataset = IntegerGraphs(str(tmp_path))
    dataset.transform = T.Constant(value=2.0)
    DegreeQuantMask().add_to(dataset)
    assert isinstance(dataset.transform, T.Compose)
    data = dataset[0]
    assert data.x.size(1) == 4 and bool((data.x[:, -1] == 2.0).all())
    assert 'degree_quant_prob' in data


def test_batch_is_ranked_per_graph():
    graphs = [small_graph(n, seed=n) for n in (4, 10, 7)]
    batch = DegreeQuantMask(0.0, 0.5)(Batch.from_data_list(graphs))
    expected = torch.cat([DegreeQuantMask(0.0, 0.5)(g).degree_quant_prob
                          for g in graphs])
    assert torch.equal(batch.degree_quant_prob, expected)


def test_cache_is_per_graph_object_and_settings():
    edge_index = small_graph().edge_index
    first = graph_protection_probability(edge_index, 6, 0.0, 0.1)
    assert graph_protection_probability(edge_index, 6, 0.0, 0.1) is first
    other = graph_protection_probability(edge_index, 6, 0.0, 0.3)
    assert not torch.equal(first, other)
    assert graph_protection_probability(edge_index.clone(), 6, 0.0, 0.1) \
        is not first
    attached = torch.full((6, ), 0.7)
    attach_protection_probability(edge_index, attached)
    assert graph_protection_probability(edge_index, 6) is attached
    # A different node count ignores the attached numbers.
    assert graph_protection_probability(edge_index, 9).numel() == 9


def test_bad_input_raises():
    with pytest.raises(TypeError, match="'data'"):
        DegreeQuantMask()(HeteroData())
    with pytest.raises(ValueError, match="'p_max'"):
        DegreeQuantMask(0.0, 2.0)
    with pytest.raises(TypeError, match="'prob'"):
        attach_protection_probability(torch.zeros(2, 3, dtype=torch.long),
                                      torch.zeros(2, 2))


@pytest.mark.skipif(not has_shared('PROTEINS'),
                    reason='shared PROTEINS data absent')
def test_real_tu_dataset_without_transform(tmp_path):
    from torch_geometric.datasets import TUDataset
    shutil.copytree(SHARED_DATA / 'PROTEINS' / 'raw',
                    tmp_path / 'PROTEINS' / 'raw')
    dataset = TUDataset(str(tmp_path), 'PROTEINS')[:64]
    assert dataset.transform is None
    DegreeQuantMask(0.0, 0.2).add_to(dataset)
    batch = next(iter(DataLoader(dataset, batch_size=16)))
    prob = batch.degree_quant_prob
    assert prob.shape == (batch.num_nodes, )
    assert bool(((prob > 0) & (prob <= 0.2 + 1e-6)).all())
    # The best-connected node of each graph gets p_max.
    for i in range(16):
        assert abs(float(prob[batch.batch == i].max()) - 0.2) < 1e-6
