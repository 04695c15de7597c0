r"""Point-cloud classification with the float DGCNN and its binary variants
(`Bahri et al., 2021 <https://arxiv.org/abs/2012.15823>`_, §5.2), shared by
the ModelNet40 example, the demo and the tests.

:func:`run_point_cloud_recipe` is the whole path: a validation split carved
from the training shapes with a fixed seed, the float DGCNN trained and
selected on it, then (binary variants) the binary DGCNN distilled from it
by :func:`~pyg_qgnn.distill.cascade_distill` (all three stages, or one),
converted with :func:`pyg_qgnn.deploy.convert`, saved with
:func:`pyg_qgnn.deploy.save` and loaded back, and both the fake-quantized
and the loaded deployed model scored on the test shapes: overall accuracy
and mean-class accuracy (the mean of the per-class recalls over the classes
present).
"""
import copy
import os
import tempfile
import textwrap
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import BaseTransform

from pyg_qgnn import deploy
from pyg_qgnn.datasets.modelnet import LoadedPointClouds
from pyg_qgnn.distill.cascade import (
    PAPER_STAGES,
    StageConfig,
    StageResult,
    accuracy,
    cascade_distill,
)
from pyg_qgnn.nn.models import DGCNN, BinaryDGCNN
from pyg_qgnn.quantizers import register_latent_weight_clipping, \
    set_binarization_stage
from pyg_qgnn.selection import Selection
from pyg_qgnn.train.results import markdown_table, seed_everything, summarize

VARIANTS = ('float', 'rf', 'bf1', 'bf2')
#: Training-time distances of the dynamic graphs: "xor" is the relaxation
#: of Eq. 21; binary features are searched by exact Hamming distance on
#: packed bits in evaluation either way.
KNN_DISTANCES = ('l2', 'xor')
LSP_CHOICES = ('none', 'rbf', 'hamming')

#: ``callback(phase, epoch, metrics)`` after every epoch; phase is
#: ``"float"`` or ``"stage N"``.
Callback = Callable[[str, int, dict], None]


def holdout_split(labels: Tensor, fraction: float = 0.2,
                  seed: int = 0) -> Tuple[Tensor, Tensor]:
    r"""Indices :obj:`(train, val)`: from each class a share
    :obj:`fraction` of its shapes (rounded; a class of one shape stays in
    training) drawn with :obj:`seed` goes to validation, at least one
    shape overall."""
    labels = torch.as_tensor(labels).view(-1)
    if not 0 < fraction < 1:
        raise ValueError(f"'fraction' must be in (0, 1) (got {fraction!r})")
    if labels.numel() < 2:
        raise ValueError(f"at least 2 training shapes are needed to carve a "
                         f"validation split (got {labels.numel()})")
    order = torch.randperm(labels.numel(),
                           generator=torch.Generator().manual_seed(seed))
    is_val = torch.zeros(labels.numel(), dtype=torch.bool)
    for label in labels.unique():
        members = order[labels[order] == label]
        is_val[members[:int(round(fraction * members.numel()))]] = True
    if not bool(is_val.any()):
        is_val[order[0]] = True
    return (~is_val).nonzero().view(-1), is_val.nonzero().view(-1)


class RandomScaleShift(BaseTransform):
    r"""DGCNN's training augmentation: every coordinate axis of a cloud is
    scaled by a factor drawn from :obj:`scales` and shifted by one drawn
    from :math:`[-\mathrm{shift}, \mathrm{shift}]`.

    Args:
        scales (tuple, optional): The range of the factors.
            (default: :obj:`(2/3, 3/2)`)
        shift (float, optional): The largest shift. (default: :obj:`0.2`)
    """
    def __init__(self, scales: Tuple[float, float] = (2 / 3, 3 / 2),
                 shift: float = 0.2):
        self.scales = scales
        self.shift = shift

    def forward(self, data: Data) -> Data:
        low, high = self.scales
        scale = low + (high - low) * torch.rand(3)
        offset = self.shift * (2 * torch.rand(3) - 1)
        data.pos = data.pos * scale + offset
        return data

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(scales={self.scales}, '
                f'shift={self.shift})')


class _Transformed(torch.utils.data.Dataset):
    r"""Clouds with a transform applied to a copy at every access."""
    def __init__(self, clouds: Sequence[Data], transform: Callable):
        self.clouds, self.transform = list(clouds), transform

    def __len__(self) -> int:
        return len(self.clouds)

    def __getitem__(self, index: int) -> Data:
        return self.transform(copy.copy(self.clouds[index]))


@dataclass
class Evaluation:
    r"""Overall and mean-class accuracy, with the predictions and logits
    they come from (in loader order)."""
    acc: float
    mean_class_acc: float
    pred: Tensor
    logits: Tensor


@torch.no_grad()
def evaluate_point_classifier(model: nn.Module, loader,
                              device: Optional[torch.device] = None
                              ) -> Evaluation:
    r"""Scores :obj:`model(pos, batch)` in evaluation mode on
    :obj:`loader`; the model's mode is restored afterwards."""
    mode = model.training
    model.eval()
    logits, targets = [], []
    try:
        for data in loader:
            data = data.to(device) if device is not None else data
            logits.append(model(data.pos, data.batch).cpu())
            targets.append(data.y.view(-1).cpu())
    finally:
        model.train(mode)
    if not logits:
        raise ValueError("'loader' yields no clouds to evaluate")
    logits, target = torch.cat(logits), torch.cat(targets)
    pred = logits.argmax(-1)
    correct = (pred == target).float()
    recalls = [correct[target == c].mean() for c in target.unique()]
    return Evaluation(float(correct.mean()),
                      float(torch.stack(recalls).mean()), pred, logits)


def train_point_classifier(model: nn.Module, train_loader, config: StageConfig,
                           val_loader=None,
                           device: Optional[torch.device] = None,
                           callback: Optional[Callable[[int, dict], None]]
                           = None) -> StageResult:
    r"""Trains :obj:`model(pos, batch)` on the cross-entropy with Adam and
    the schedule of :obj:`config` (latent binary weights, if any, centred
    and clipped after every step), keeping the state with the best
    validation accuracy (the first on ties). The counterpart without a
    teacher of :func:`~pyg_qgnn.distill.distill`; :obj:`callback(epoch,
    metrics)` follows every epoch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    clipping = register_latent_weight_clipping(optimizer, model)
    scheduler = config.scheduler(optimizer)
    result = StageResult(0, model)
    selection = Selection()
    try:
        for epoch in range(config.epochs):
            model.train()
            total = correct = count = 0
            for data in train_loader:
                data = data.to(device) if device is not None else data
                logits = model(data.pos, data.batch)
                target = data.y.view(-1)
                loss = F.cross_entropy(logits, target)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * target.numel()
                correct += int((logits.argmax(-1) == target).sum())
                count += target.numel()
            scheduler.step()
            metrics = dict(loss=total / max(count, 1),
                           train_acc=correct / max(count, 1))
            if val_loader is not None:
                metrics['val_acc'] = accuracy(model, val_loader, device=device)
                selection.offer(model, metrics['val_acc'], epoch)
            result.history.append(metrics)
            if callback is not None:
                callback(epoch, metrics)
    finally:
        clipping.remove()
    selection.restore(model)
    return result


@dataclass
class PointCloudRecipe:
    r"""What :func:`run_point_cloud_recipe` trains, and how.

    Args:
        variant (str): :obj:`"float"` (DGCNN only), or the binary DGCNN
            :obj:`"rf"`, :obj:`"bf1"` or :obj:`"bf2"` distilled from it.
        knn (str): Training-time distance of the binary model's dynamic
            graphs after the first: :obj:`"l2"` or :obj:`"xor"` (Eq. 21).
        lsp (str): :obj:`"none"`, :obj:`"rbf"` or :obj:`"hamming"` (Eq. 22,
            binary features only: BF variants).
        lsp_weight (float): :math:`\lambda_{LSP}` (paper: 100).
        stages (tuple): Cascade stages, :obj:`(1, 2, 3)`, or one stage.
        epochs (int, optional): Epochs of each binary stage; :obj:`None`
            for the paper's (250, 350, 350).
        teacher_epochs (int): Epochs of the float DGCNN (paper: 250).
        teacher_lr (float): Adam's learning rate for the float DGCNN.
        k, conv_channels, embed_channels, hidden_channels, dropout: The
            architecture (:class:`~pyg_qgnn.nn.models.DGCNN`).
        batch_size (int): Clouds per step.
        temperature, alpha: Logit matching (paper: 3 and 0.1).
        augment (bool): :class:`RandomScaleShift` on training clouds.
    """
    variant: str = 'rf'
    knn: str = 'l2'
    lsp: str = 'none'
    lsp_weight: float = 100.0
    stages: Tuple[int, ...] = (1, 2, 3)
    epochs: Optional[int] = None
    teacher_epochs: int = 250
    teacher_lr: float = 1e-3
    k: int = 20
    conv_channels: Tuple[int, ...] = (64, 64, 128, 256)
    embed_channels: int = 1024
    hidden_channels: Tuple[int, ...] = (512, 256)
    dropout: float = 0.5
    batch_size: int = 32
    temperature: float = 3.0
    alpha: float = 0.1
    augment: bool = True

    def __post_init__(self):
        for name, options in (('variant', VARIANTS), ('knn', KNN_DISTANCES),
                              ('lsp', LSP_CHOICES)):
            if getattr(self, name) not in options:
                raise ValueError(f"'{name}' must be one of {options} "
                                 f"(got {getattr(self, name)!r})")
        if self.variant == 'float' and (self.lsp != 'none'
                                        or self.knn != 'l2'):
            raise ValueError("'lsp' and 'knn' apply to the binary variants; "
                             "the float DGCNN has no teacher and uses l2")
        if self.lsp == 'hamming' and self.variant == 'rf':
            raise ValueError("'lsp'='hamming' needs binary graph features "
                             "(variant 'bf1' or 'bf2'); RF features are real")
        self.stages = tuple(self.stages)
        if not self.stages or list(self.stages) != sorted(
                set(self.stages)) or not set(self.stages) <= {1, 2, 3}:
            raise ValueError(f"'stages' must be increasing stages among 1, 2, "
                             f"3 (got {self.stages!r})")
        for name in ('teacher_epochs', 'epochs', 'k', 'batch_size'):
            value = getattr(self, name)
            if (value is not None or name != 'epochs') and (
                    isinstance(value, bool) or not isinstance(value, int)
                    or value < 1):
                raise ValueError(f"'{name}' must be a positive int "
                                 f"(got {value!r})")

    @property
    def binary(self) -> bool:
        return self.variant != 'float'

    def architecture(self) -> dict:
        return dict(k=self.k, conv_channels=tuple(self.conv_channels),
                    embed_channels=self.embed_channels,
                    hidden_channels=tuple(self.hidden_channels),
                    dropout=self.dropout)

    def float_model(self, num_classes: int) -> DGCNN:
        return DGCNN(num_classes=num_classes, **self.architecture())

    def binary_model(self, num_classes: int, stage: int = 3) -> BinaryDGCNN:
        r"""The binary DGCNN at :obj:`stage` (for a checkpoint's skeleton)."""
        model = BinaryDGCNN(self.variant, num_classes=num_classes,
                            knn=self.knn, **self.architecture())
        return set_binarization_stage(model, stage)

    def teacher_config(self) -> StageConfig:
        return StageConfig(self.teacher_epochs, self.teacher_lr, 1e-4)

    def stage_configs(self) -> Dict[int, StageConfig]:
        r"""The paper's per-stage optimisation (§5.2), with :obj:`epochs`
        in place of its epoch counts when set."""
        return {s: c if self.epochs is None else replace(c, epochs=self.epochs)
                for s, c in PAPER_STAGES.items()}


@dataclass
class PointCloudResult:
    r"""One run: a row per trained model (the float DGCNN, then the binary
    one), the per-epoch curves of every phase, and the final models (the
    fake-quantized one and the deployed one loaded back from its file)."""
    rows: List[dict]
    history: List[dict] = field(default_factory=list)
    model: Optional[nn.Module] = None
    deployed: Optional[nn.Module] = None


def run_point_cloud_recipe(data: LoadedPointClouds, recipe: PointCloudRecipe,
                           seed: int = 0, val_fraction: float = 0.2,
                           split_seed: int = 0,
                           device: Optional[torch.device] = None,
                           checkpoint: Optional[str] = None,
                           teacher: Optional[nn.Module] = None,
                           callback: Optional[Callback] = None
                           ) -> PointCloudResult:
    r"""Trains and scores :obj:`recipe` on :obj:`data` (see the module
    notes). The validation split depends on :obj:`split_seed` only;
    :obj:`seed` drives initialisation, shuffling and augmentation. The
    deployed model is written to :obj:`checkpoint` (a temporary file if
    :obj:`None`) and loaded back before it is scored. A trained float
    :obj:`teacher` (:meth:`PointCloudRecipe.float_model`, selected on the
    same split) replaces the float training. Models train on :obj:`device`
    and are scored on the CPU."""
    labels = torch.cat([cloud.y for cloud in data.train])
    train_idx, val_idx = holdout_split(labels, val_fraction, split_seed)
    clouds = _Transformed([data.train[i] for i in train_idx],
                          RandomScaleShift() if recipe.augment else copy.copy)
    seed_everything(seed)
    loaders = dict(
        train=DataLoader(clouds, recipe.batch_size, shuffle=True,
                         drop_last=len(clouds) > recipe.batch_size),
        val=DataLoader([data.train[i] for i in val_idx], recipe.batch_size),
        test=DataLoader(data.test, recipe.batch_size))
    result = PointCloudResult(rows=[])
    split = dict(train=len(train_idx), val=len(val_idx), test=len(data.test))

    def phase_callback(phase: str) -> Callable[[int, dict], None]:
        def record(epoch: int, metrics: dict):
            result.history.append(dict(metrics, phase=phase, epoch=epoch + 1))
            if callback is not None:
                callback(phase, epoch, metrics)
        return record

    start = time.perf_counter()
    if teacher is None:
        teacher = recipe.float_model(data.num_classes).to(device)
        train_point_classifier(teacher, loaders['train'],
                               recipe.teacher_config(), loaders['val'],
                               device, phase_callback('float'))
        name = 'float DGCNN'
    else:
        teacher = copy.deepcopy(teacher).to(device)
        name = 'float DGCNN (given)'
    models = [(name, 0, teacher, time.perf_counter() - start)]
    if recipe.binary:
        start = time.perf_counter()
        stages = cascade_distill(
            recipe.binary_model(data.num_classes).to(device), teacher,
            loaders['train'], stages=recipe.stages,
            configs=recipe.stage_configs(), val_loader=loaders['val'],
            temperature=recipe.temperature, alpha=recipe.alpha,
            lsp_weight=recipe.lsp_weight if recipe.lsp != 'none' else 0.0,
            lsp_similarity='rbf' if recipe.lsp == 'none' else recipe.lsp,
            device=device, callback=lambda stage, epoch, metrics:
            phase_callback(f'stage {stage}')(epoch, metrics))
        models.append((f'binary DGCNN {recipe.variant.upper()}',
                       recipe.stages[-1], stages[-1].model,
                       time.perf_counter() - start))
    float_bytes = deploy.nbytes(recipe.float_model(data.num_classes))
    for i, (name, stage, model, seconds) in enumerate(models):
        model = model.cpu().eval()
        last = i == len(models) - 1
        row, deployed = _score(model, recipe, data.num_classes, stage,
                               loaders, checkpoint if last else None)
        row.update(model=name, variant='float' if stage == 0 else
                   recipe.variant, stage=stage, seed=seed,
                   float_bytes=float_bytes, train_seconds=seconds,
                   dataset=data.name, source=data.kind, split=split,
                   split_seed=split_seed)
        result.rows.append(row)
        result.model, result.deployed = model, deployed
    return result


def _score(model: nn.Module, recipe: PointCloudRecipe, num_classes: int,
           stage: int, loaders: dict, checkpoint: Optional[str]):
    r"""Validation and test scores of :obj:`model`, and of its deployed form
    after a round trip through :func:`pyg_qgnn.deploy.save` /
    :func:`~pyg_qgnn.deploy.load`."""
    fake_quant = evaluate_point_classifier(model, loaders['test'])
    deployed = deploy.convert(model)
    skeleton = recipe.float_model(num_classes) if stage == 0 else \
        recipe.binary_model(num_classes, stage)
    with tempfile.TemporaryDirectory() as scratch:
        path = checkpoint or os.path.join(scratch, 'model.safetensors')
        file_bytes = deploy.save(deployed, path)
        restored = deploy.load(path, deploy.convert(skeleton.eval()))
    shipped = evaluate_point_classifier(restored, loaders['test'])
    row = dict(val_acc=accuracy(model, loaders['val']),
               test_acc=fake_quant.acc,
               test_mean_class_acc=fake_quant.mean_class_acc,
               deployed_acc=shipped.acc,
               deployed_mean_class_acc=shipped.mean_class_acc,
               deployed_equal=bool(torch.equal(fake_quant.pred, shipped.pred)),
               max_logit_diff=float((fake_quant.logits - shipped.logits)
                                    .abs().max()),
               bytes=deploy.nbytes(restored), file_bytes=file_bytes)
    return row, restored


# Reporting ###################################################################

_MEASURES = ('val_acc', 'test_acc', 'test_mean_class_acc', 'deployed_acc',
             'deployed_mean_class_acc')


def aggregate_runs(runs: Sequence[Sequence[dict]]) -> List[dict]:
    r"""One row per model over seeds: the first seed's row with
    :obj:`<measure>_mean` / :obj:`<measure>_std` for every accuracy, the
    seeds, and whether the deployed predictions equalled the fake-quantized
    ones in every run."""
    rows = []
    for per_seed in zip(*runs):
        row = dict(per_seed[0])
        for measure in _MEASURES:
            summary = summarize([r[measure] for r in per_seed])
            row[f'{measure}_mean'], row[f'{measure}_std'] = summary.mean, \
                summary.std
            del row[measure]
        row['seeds'] = [r['seed'] for r in per_seed]
        del row['seed']
        row['deployed_equal'] = all(r['deployed_equal'] for r in per_seed)
        row['max_logit_diff'] = max(r['max_logit_diff'] for r in per_seed)
        rows.append(row)
    return rows


def format_point_rows(rows: Sequence[dict]) -> str:
    r"""Rows of :func:`aggregate_runs` as a markdown table."""
    def pct(row, measure):
        return (f"{100 * row[measure + '_mean']:.2f} ± "
                f"{100 * row[measure + '_std']:.2f}")

    return markdown_table(
        ['model', 'stage', 'val acc', 'test acc', 'test mean-class acc',
         'deployed test acc', 'deployed = fake-quant', 'stored bytes',
         'smaller by'],
        [[r['model'], r['stage'], pct(r, 'val_acc'), pct(r, 'test_acc'),
          pct(r, 'test_mean_class_acc'), pct(r, 'deployed_acc'),
          'yes' if r['deployed_equal'] else 'NO', r['bytes'],
          f"{r['float_bytes'] / r['bytes']:.1f}x"] for r in rows])


def plot_curves(history: Sequence[dict], path: str, title: str = ''):
    r"""Training loss and validation accuracy per epoch, one line per phase
    (float, stage 1, 2, 3) laid end to end, as a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    offset, phases = 0, list(dict.fromkeys(h['phase'] for h in history))
    for phase in phases:
        entries = [h for h in history if h['phase'] == phase]
        epochs = [offset + h['epoch'] for h in entries]
        loss_ax.plot(epochs, [h['loss'] for h in entries], label=phase)
        acc_ax.plot(epochs, [100 * h.get('val_acc', float('nan'))
                             for h in entries], label=phase)
        offset = epochs[-1]
    loss_ax.set_xlabel('epoch')
    loss_ax.set_ylabel('training loss')
    acc_ax.set_xlabel('epoch')
    acc_ax.set_ylabel('validation accuracy (%)')
    acc_ax.legend(fontsize=7)
    if title:
        fig.suptitle(textwrap.fill(title, 110), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
