"""Tests of the cascaded distillation driver on tiny point clouds."""
import copy

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import global_mean_pool

from pyg_qgnn.distill import (
    StageConfig,
    accuracy,
    cascade_distill,
    distill,
)
from pyg_qgnn.nn.models import DGCNN, BinaryDGCNN
from pyg_qgnn.quantizers import (
    SignQuantizer,
    latent_binary_weights,
    set_binarization_stage,
)

TINY = dict(num_classes=2, k=4, conv_channels=(8, 8, 8), embed_channels=16,
            hidden_channels=(16, ), dropout=0.0)


def shapes(count=12, points=24, seed=0):
    r"""Two classes: points on a sphere and points in a flat square."""
    gen = torch.Generator().manual_seed(seed)
    data = []
    for i in range(count):
        pos = torch.randn(points, 3, generator=gen)
        if i % 2:
            pos = pos / pos.norm(dim=1, keepdim=True)
        else:
            pos[:, 2] = 0.05 * pos[:, 2]
        data.append(Data(pos=pos, y=torch.tensor([i % 2])))
    return data


def loaders():
    data = shapes()
    return (DataLoader(data[:8], batch_size=8, shuffle=False),
            DataLoader(data[8:], batch_size=4))


def quick(lr=1e-2, epochs=1):
    return {s: StageConfig(epochs, lr, 0.0) for s in (1, 2, 3)}


def stage_of(model):
    quantizers = [m for m in model.modules() if isinstance(m, SignQuantizer)]
    weights = [m.weight_quantizer for m in model.modules()
               if isinstance(getattr(m, 'weight_quantizer', None),
                             SignQuantizer)]
    if not any(q.fake_quant_enabled for q in quantizers):
        return 0
    if any(q.relaxed for q in quantizers):
        return 1
    return 3 if all(w.binarizing for w in weights) else 2


def test_three_stages_each_student_starts_from_its_teacher():
    torch.manual_seed(0)
    train, val = loaders()
    teacher = BinaryDGCNN('bf1', **TINY)  # same architecture, trained at 0
    seen = []
    # A vanishing learning rate: each student must still equal its teacher.
    results = cascade_distill(
        BinaryDGCNN('bf1', **TINY), teacher, train, configs=quick(lr=1e-12),
        callback=lambda stage, epoch, m: seen.append((stage, epoch)))
    assert [r.stage for r in results] == [1, 2, 3]
    assert [stage_of(r.model) for r in results] == [1, 2, 3]
    assert seen == [(1, 0), (2, 0), (3, 0)]
    previous = teacher
    for result in results:
        assert result.model is not previous
        for (name, p), q in zip(result.model.named_parameters(),
                                previous.parameters()):
            if 'weight' in name and p.dim() == 2 and result.stage == 3:
                continue  # latent binary weights are centred and clipped
            assert torch.allclose(p, q, atol=1e-6), name
        previous = result.model
    assert len(results[0].history) == 1
    assert set(results[0].history[0]) == {'loss', 'train_acc'}


def test_float_teacher_with_lsp_and_validation_selection():
    torch.manual_seed(0)
    train, val = loaders()
    teacher = DGCNN(**TINY)
    student = set_binarization_stage(BinaryDGCNN('bf1', **TINY), 3)
    states = []

    def remember(stage, epoch, metrics):
        states.append((metrics['val_acc'],
                       copy.deepcopy(student.state_dict())))

    result = distill(student, teacher, train, StageConfig(3, 1e-2, 0.0),
                     val_loader=val, lsp_weight=100.0,
                     lsp_similarity='hamming', callback=remember)
    assert result.model is student and len(result.history) == 3
    assert all(0.0 <= h['val_acc'] <= 1.0 for h in result.history)
    best = max(range(3), key=lambda e: (states[e][0], -e))  # first best
    final = student.state_dict()
    assert all(torch.equal(final[k], v) for k, v in states[best][1].items())
    assert accuracy(student, val) == pytest.approx(states[best][0])
    # stage 3: latent binary weights stay centred and clipped
    assert latent_binary_weights(student)
    for weight in latent_binary_weights(student):
        assert float(weight.detach().abs().max()) <= 1.0


class PooledLinear(torch.nn.Module):
    r"""A teacher without dynamic graphs."""
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, pos, batch):
        return global_mean_pool(self.lin(pos), batch)


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    train, _ = loaders()
    teacher = DGCNN(**TINY)
    result = cascade_distill(BinaryDGCNN('bf2', **TINY), teacher, train,
                             stages=(1, ), configs=quick(epochs=6))
    losses = [h['loss'] for h in result[0].history]
    assert losses[-1] < losses[0]


def test_bad_arguments_name_the_argument():
    train, _ = loaders()
    student, teacher = BinaryDGCNN('rf', **TINY), DGCNN(**TINY)
    with pytest.raises(ValueError, match="'stages'"):
        cascade_distill(student, teacher, train, stages=(2, 1))
    with pytest.raises(ValueError, match="'configs'"):
        cascade_distill(student, teacher, train, configs={1: quick()[1]})
    with pytest.raises(ValueError, match="'lsp_similarity'"):
        distill(student, teacher, train, quick()[1], lsp_similarity='cos')
    with pytest.raises(ValueError, match="'epochs'"):
        StageConfig(0, 1e-3, 0.0)
    with pytest.raises(ValueError, match="'schedule'"):
        StageConfig(1, 1e-3, 0.0, schedule='cosine')
    with pytest.raises(ValueError, match='different numbers of dynamic'):
        distill(student, PooledLinear(), train, quick()[1], lsp_weight=1.0)
    with pytest.raises(ValueError, match="'teacher_lsp_similarity'"):
        distill(student, teacher, train, quick()[1],
                teacher_lsp_similarity='l2')
    with pytest.raises(ValueError, match="'hamming' similarity needs"):
        distill(student, teacher, train, quick()[1], lsp_weight=1.0,
                lsp_similarity='hamming')  # real RF features
