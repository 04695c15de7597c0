"""Tests of the point-cloud training path (pyg_qgnn.train.pointcloud) on
tiny synthetic clouds."""
import pytest
import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from pyg_qgnn import deploy
from pyg_qgnn.datasets import synthetic_shapes
from pyg_qgnn.distill import StageConfig
from pyg_qgnn.nn.models import BinaryDGCNN
from pyg_qgnn.quantizers import latent_binary_weights
from pyg_qgnn.train.pointcloud import (
    PointCloudRecipe,
    _Transformed,
    RandomScaleShift,
    aggregate_runs,
    evaluate_point_classifier,
    format_point_rows,
    holdout_split,
    plot_curves,
    run_point_cloud_recipe,
    train_point_classifier,
)
from pyg_qgnn.train.results import summarize

TINY = dict(k=4, conv_channels=(8, 8), embed_channels=16,
            hidden_channels=(16, ), batch_size=8, teacher_epochs=2, epochs=1)


@pytest.fixture(scope='module')
def clouds():
    return synthetic_shapes(points=32, train_per_class=4, test_per_class=1)


def test_holdout_split_is_stratified_seeded_and_disjoint():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2])
    train, val = holdout_split(labels, 0.2, seed=3)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(16))
    assert labels[val].tolist().count(0) == 2  # round(0.2 * 10)
    assert labels[val].tolist().count(1) == 1
    assert 15 in train.tolist()  # a class of one shape stays in training
    again = holdout_split(labels, 0.2, seed=3)
    assert torch.equal(again[1], val)
    assert not torch.equal(holdout_split(labels, 0.2, seed=4)[1], val)
    # Too small for any class share: still one validation shape.
    assert holdout_split(torch.tensor([0, 1, 2]), 0.2)[1].numel() == 1
    with pytest.raises(ValueError, match="'fraction' must be in"):
        holdout_split(labels, 1.0)
    with pytest.raises(ValueError, match='at least 2 training shapes'):
        holdout_split(torch.tensor([0]), 0.2)


def test_random_scale_shift_follows_dgcnn_augmentation():
    pos = torch.randn(10, 3)
    torch.manual_seed(0)
    out = RandomScaleShift()(Data(pos=pos.clone())).pos
    torch.manual_seed(0)
    scale = 2 / 3 + (3 / 2 - 2 / 3) * torch.rand(3)
    shift = 0.2 * (2 * torch.rand(3) - 1)
    assert torch.allclose(out, pos * scale + shift)
    assert ((scale >= 2 / 3) & (scale <= 3 / 2)).all()
    # The training set augments a copy at every access, never the cloud.
    cloud = Data(pos=pos.clone(), y=torch.tensor([0]))
    augmented = _Transformed([cloud], RandomScaleShift())
    assert not torch.equal(augmented[0].pos, augmented[0].pos)
    assert torch.equal(cloud.pos, pos)


class FixedLogits(nn.Module):
    r"""Logits that predict :obj:`pred[i]` for the i-th cloud."""
    def __init__(self, pred, num_classes):
        super().__init__()
        self.logits = nn.functional.one_hot(pred, num_classes).float()

    def forward(self, pos, batch):
        start = int(getattr(self, 'seen', 0))
        count = int(batch.max()) + 1
        self.seen = start + count
        return self.logits[start:start + count]


def test_mean_class_accuracy_is_the_mean_of_per_class_recalls():
    target = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    pred = torch.tensor([0, 0, 0, 1, 1, 0, 2])
    data = [Data(pos=torch.randn(3, 3), y=y.view(1)) for y in target]
    result = evaluate_point_classifier(FixedLogits(pred, 4),
                                       DataLoader(data, batch_size=3))
    assert result.acc == pytest.approx(5 / 7)
    # Recalls 3/4, 1, 1/2 over the classes present (class 3 is not).
    assert result.mean_class_acc == pytest.approx((3 / 4 + 1 + 1 / 2) / 3)
    assert torch.equal(result.pred, pred)


def test_training_keeps_the_best_validation_state_and_clips_weights(clouds):
    torch.manual_seed(0)
    model = BinaryDGCNN('bf1', num_classes=8, k=4, conv_channels=(8, 8),
                        embed_channels=16, hidden_channels=(16, ))
    train = DataLoader(clouds.train, batch_size=8, shuffle=True)
    val = DataLoader(clouds.test, batch_size=8)
    seen = []
    result = train_point_classifier(model, train, StageConfig(4, 1e-2, 0.0),
                                    val, callback=lambda e, m: seen.append(e))
    assert seen == [0, 1, 2, 3] and len(result.history) == 4
    best = max(h['val_acc'] for h in result.history)
    assert evaluate_point_classifier(model, val).acc == pytest.approx(best)
    assert all(float(w.detach().abs().max()) <= 1
               for w in latent_binary_weights(model))


def test_training_reduces_the_loss(clouds):
    torch.manual_seed(0)
    model = PointCloudRecipe(variant='float', **TINY).float_model(8)
    train = DataLoader(clouds.train, batch_size=8, shuffle=True)
    result = train_point_classifier(model, train, StageConfig(5, 1e-2, 0.0))
    losses = [h['loss'] for h in result.history]
    assert losses[-1] < losses[0] and 'val_acc' not in result.history[0]


@pytest.mark.parametrize('kwargs,name', [
    (dict(variant='xnor'), 'variant'),
    (dict(knn='hamming'), 'knn'),
    (dict(lsp='kl'), 'lsp'),
    (dict(variant='float', lsp='rbf'), 'lsp'),
    (dict(variant='rf', lsp='hamming'), 'lsp'),
    (dict(stages=(3, 1)), 'stages'),
    (dict(stages=()), 'stages'),
    (dict(epochs=0), 'epochs'),
    (dict(teacher_epochs=-1), 'teacher_epochs'),
    (dict(k=0), 'k'),
])
def test_recipe_names_the_bad_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"'{name}'"):
        PointCloudRecipe(**kwargs)


def test_cascade_with_lsp_deploys_exactly_and_reuses_a_teacher(clouds,
                                                               tmp_path):
    recipe = PointCloudRecipe(variant='rf', lsp='rbf', stages=(1, 2, 3),
                              **TINY)
    phases = []
    path = str(tmp_path / 'rf.safetensors')
    result = run_point_cloud_recipe(clouds, recipe, seed=0,
                                    checkpoint=path,
                                    callback=lambda p, e, m: phases.append(p))
    assert phases == ['float', 'float', 'stage 1', 'stage 2', 'stage 3']
    assert [h['phase'] for h in result.history] == phases
    teacher_row, binary_row = result.rows
    assert (teacher_row['stage'], binary_row['stage']) == (0, 3)
    assert binary_row['split'] == dict(train=24, val=8, test=8)
    for row in result.rows:
        assert row['deployed_equal'] and row['max_logit_diff'] <= 1e-5
        assert row['deployed_acc'] == row['test_acc']
        assert row['source'] == 'synthetic'
    assert binary_row['bytes'] < teacher_row['bytes'] == \
        binary_row['float_bytes']
    # The checkpoint holds the final model, packed; it loads back.
    fresh = deploy.convert(recipe.binary_model(8).eval())
    deploy.load(path, fresh)
    pos, batch = torch.randn(64, 3), torch.arange(2).repeat_interleave(32)
    assert torch.equal(fresh(pos, batch), result.deployed(pos, batch))

    # A given teacher is scored, not trained again.
    teacher = recipe.float_model(8)
    again = run_point_cloud_recipe(clouds, PointCloudRecipe(
        variant='bf2', stages=(2, ), **TINY), teacher=teacher,
        callback=lambda p, e, m: phases.append(p))
    assert phases[5:] == ['stage 2']
    assert again.rows[0]['model'] == 'float DGCNN (given)'
    assert again.rows[1]['stage'] == 2 and again.rows[1]['deployed_equal']


def test_aggregate_and_table(tmp_path):
    def row(seed, acc):
        return dict(model='m', stage=3, seed=seed, val_acc=acc,
                    test_acc=acc, test_mean_class_acc=acc, deployed_acc=acc,
                    deployed_mean_class_acc=acc, deployed_equal=True,
                    max_logit_diff=0.0, bytes=100, float_bytes=2000)

    rows = aggregate_runs([[row(0, 0.5)], [row(1, 0.7)]])
    expected = summarize([0.5, 0.7])
    assert rows[0]['test_acc_mean'] == pytest.approx(expected.mean)
    assert rows[0]['test_acc_std'] == pytest.approx(expected.std)
    assert rows[0]['seeds'] == [0, 1] and 'test_acc' not in rows[0]
    table = format_point_rows(rows)
    assert '| m | 3 | 60.00 ± 14.14 |' in table and '| yes | 100 | 20.0x |' \
        in table
    pytest.importorskip('matplotlib')
    history = [dict(phase='float', epoch=1, loss=1.0, val_acc=0.1),
               dict(phase='stage 3', epoch=1, loss=2.0, val_acc=0.2)]
    plot_curves(history, str(tmp_path / 'curves.png'), 'title')
    assert (tmp_path / 'curves.png').stat().st_size > 0
