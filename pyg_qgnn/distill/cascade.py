r"""Cascaded distillation (`Martinez et al., 2020
<https://arxiv.org/abs/2003.11535>`_) as used for binary GNNs (`Bahri et al.,
2021 <https://arxiv.org/abs/2012.15823>`_, §3 and §5.2): a real model is
distilled into a binary one in three stages, each student initialised from
its teacher and set to its stage with
:func:`~pyg_qgnn.quantizers.set_binarization_stage`:

1. :math:`\tanh` in place of sign, real weights;
2. binary activations, real weights;
3. binary activations and weights.

Every stage trains on :func:`distillation_loss` (logit matching) plus,
optionally, :math:`\lambda_{LSP}` times the mean LSP loss over the dynamic
graphs of the model but the first (built on the fixed coordinates). It works
with any model whose binarization is made of
:class:`~pyg_qgnn.quantizers.SignQuantizer` modules and whose dynamic graphs
come from :class:`~pyg_qgnn.nn.conv.knn_graph.KNNGraph` modules, such as
:class:`~pyg_qgnn.nn.models.BinaryDGCNN`.

.. code-block:: python

    teacher = DGCNN(num_classes=40)  # trained
    results = cascade_distill(BinaryDGCNN('rf', num_classes=40), teacher,
                              train_loader, val_loader=val_loader,
                              lsp_weight=100.0)
    binary_model = results[-1].model
"""
import copy
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from pyg_qgnn.distill.logits import check_alpha, distillation_loss
from pyg_qgnn.distill.lsp import SIMILARITIES, GraphRecorder, lsp_loss
from pyg_qgnn.quantizers.binary import (
    register_latent_weight_clipping,
    set_binarization_stage,
)
from pyg_qgnn.selection import Selection

SCHEDULES = ('multistep', 'step')


@dataclass
class StageConfig:
    r"""Optimisation of one stage (Adam).

    Args:
        epochs (int): Training epochs.
        lr (float): Initial learning rate.
        weight_decay (float): Weight decay.
        schedule (str, optional): :obj:`"multistep"` halves the learning rate
            at 50% and 75% of the epochs; :obj:`"step"` every
            :obj:`step_size` epochs. (default: :obj:`"multistep"`)
        step_size (int, optional): Of the :obj:`"step"` schedule.
            (default: :obj:`50`)
    """
    epochs: int
    lr: float
    weight_decay: float
    schedule: str = 'multistep'
    step_size: int = 50

    def __post_init__(self):
        if isinstance(self.epochs, bool) or not isinstance(
                self.epochs, int) or self.epochs < 1:
            raise ValueError(f"'epochs' must be a positive int "
                             f"(got {self.epochs!r})")
        if not self.lr > 0:
            raise ValueError(f"'lr' must be positive (got {self.lr!r})")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"'schedule' must be one of {SCHEDULES} "
                             f"(got {self.schedule!r})")

    def scheduler(self, optimizer: torch.optim.Optimizer):
        if self.schedule == 'step':
            return torch.optim.lr_scheduler.StepLR(optimizer, self.step_size,
                                                   gamma=0.5)
        milestones = sorted({self.epochs // 2, 3 * self.epochs // 4} - {0})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones,
                                                    gamma=0.5)


#: The paper's schedule on ModelNet40 (§5.2).
PAPER_STAGES: Dict[int, StageConfig] = {
    1: StageConfig(250, 1e-3, 1e-5),
    2: StageConfig(350, 2.5e-4, 1e-5),
    3: StageConfig(350, 1e-3, 0.0, schedule='step'),
}


@dataclass
class StageResult:
    r"""A trained stage: the student (the state with the best validation
    accuracy if there was a validation set, else the last), and one dict
    per epoch with :obj:`loss`, :obj:`train_acc` and :obj:`val_acc`."""
    stage: int
    model: nn.Module
    history: List[dict] = field(default_factory=list)


def point_cloud_forward(model: nn.Module, data) -> Tensor:
    r"""The default call of a model on a mini-batch:
    :obj:`model(data.pos, data.batch)`."""
    return model(data.pos, data.batch)


def lsp_similarity_of(stage: int, similarity: str) -> str:
    r"""The LSP similarity of a model at :obj:`stage` (§5, "Impact of LSP"):
    :obj:`similarity` once its features may be binary (stage 2 and later),
    the Gaussian RBF before (stage 0 stands for a real model)."""
    return similarity if stage >= 2 else 'rbf'


@torch.no_grad()
def accuracy(model: nn.Module, loader,
             forward: Callable = point_cloud_forward,
             device: Optional[torch.device] = None) -> float:
    r"""Overall accuracy of :obj:`model` (evaluation mode) on :obj:`loader`;
    the model's mode is restored afterwards."""
    mode = model.training
    model.eval()
    correct = total = 0
    try:
        for data in loader:
            data = data.to(device) if device is not None else data
            pred = forward(model, data).argmax(dim=-1)
            correct += int((pred == data.y.view(-1)).sum())
            total += pred.numel()
    finally:
        model.train(mode)
    return correct / max(total, 1)


def distill(student: nn.Module, teacher: nn.Module, train_loader,
            config: StageConfig, *, stage: int = 3, val_loader=None,
            temperature: float = 3.0, alpha: float = 0.1,
            label_smoothing: float = 0.0, lsp_weight: float = 0.0,
            lsp_similarity: str = 'rbf',
            teacher_lsp_similarity: str = 'rbf',
            forward: Callable = point_cloud_forward,
            device: Optional[torch.device] = None,
            callback: Optional[Callable[[int, int, dict], None]] = None,
            ) -> StageResult:
    r"""Trains :obj:`student` on the targets and the outputs of the frozen
    :obj:`teacher`:

    .. math::
        \mathcal{L} = (1-\alpha)\,\mathrm{CE} + \alpha\,\mathcal{L}_{KD}
        + \lambda_{LSP}\,\overline{\mathcal{L}_{LSP}}

    Latent binary weights are centred and clipped after every step
    (:func:`~pyg_qgnn.quantizers.register_latent_weight_clipping`). The
    student is modified in place and returned in a :class:`StageResult`.

    Args:
        student (torch.nn.Module): The model trained, already at its stage.
        teacher (torch.nn.Module): The trained teacher (kept in evaluation
            mode, no gradients).
        train_loader: Mini-batches with :obj:`y` (e.g. a PyG
            :class:`~torch_geometric.loader.DataLoader` of point clouds).
        config (StageConfig): Epochs, learning rate, weight decay, schedule.
        stage (int, optional): The student's stage, recorded in the result.
            (default: :obj:`3`)
        val_loader (optional): Validation mini-batches; the state with the
            best accuracy on them is kept. (default: :obj:`None`)
        temperature (float, optional): :math:`T`. (default: :obj:`3.0`)
        alpha (float, optional): :math:`\alpha`. (default: :obj:`0.1`)
        label_smoothing (float, optional): Of the cross-entropy.
            (default: :obj:`0.0`)
        lsp_weight (float, optional): :math:`\lambda_{LSP}` (paper:
            :obj:`100`); :obj:`0` turns LSP off. (default: :obj:`0.0`)
        lsp_similarity (str, optional): The student's LSP similarity,
            :obj:`"rbf"` or :obj:`"hamming"` (for binary features).
            (default: :obj:`"rbf"`)
        teacher_lsp_similarity (str, optional): The teacher's.
            (default: :obj:`"rbf"`)
        forward (Callable, optional): :obj:`forward(model, data)` returns
            logits. (default: :func:`point_cloud_forward`)
        device (torch.device, optional): Where mini-batches are moved.
        callback (Callable, optional): Called as
            :obj:`callback(stage, epoch, metrics)` after every epoch.
    """
    check_alpha(alpha)
    for name, value in (('lsp_similarity', lsp_similarity),
                        ('teacher_lsp_similarity', teacher_lsp_similarity)):
        if value not in SIMILARITIES:
            raise ValueError(f"'{name}' must be one of {SIMILARITIES} "
                             f"(got {value!r})")
    if lsp_weight < 0:
        raise ValueError(f"'lsp_weight' must be >= 0 (got {lsp_weight!r})")
    similarities = (lsp_similarity, teacher_lsp_similarity)
    teacher.eval()
    optimizer = torch.optim.Adam(student.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    clipping = register_latent_weight_clipping(optimizer, student)
    scheduler = config.scheduler(optimizer)
    result = StageResult(stage, student)
    selection = Selection()
    try:
        for epoch in range(config.epochs):
            metrics = _train_epoch(student, teacher, train_loader, optimizer,
                                   forward, device, temperature, alpha,
                                   label_smoothing, lsp_weight, similarities)
            scheduler.step()
            if val_loader is not None:
                metrics['val_acc'] = accuracy(student, val_loader, forward,
                                              device)
                selection.offer(student, metrics['val_acc'], epoch)
            result.history.append(metrics)
            if callback is not None:
                callback(stage, epoch, metrics)
    finally:
        clipping.remove()
    selection.restore(student)
    return result


def _train_epoch(student, teacher, loader, optimizer, forward, device,
                 temperature, alpha, label_smoothing, lsp_weight,
                 similarities) -> dict:
    student.train()
    total_loss = correct = count = 0
    for data in loader:
        data = data.to(device) if device is not None else data
        with GraphRecorder(student) as graphs_s:
            logits = forward(student, data)
        with torch.no_grad(), GraphRecorder(teacher) as graphs_t:
            teacher_logits = forward(teacher, data)
        target = data.y.view(-1)
        loss = distillation_loss(logits, teacher_logits, target, temperature,
                                 alpha, label_smoothing)
        if lsp_weight > 0:
            loss = loss + lsp_weight * _mean_lsp(graphs_s.graphs,
                                                 graphs_t.graphs,
                                                 similarities)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += float(loss.detach()) * target.numel()
        correct += int((logits.argmax(-1) == target).sum())
        count += target.numel()
    return dict(loss=total_loss / max(count, 1),
                train_acc=correct / max(count, 1))


def _mean_lsp(graphs_s, graphs_t, similarities) -> Tensor:
    if len(graphs_s) != len(graphs_t):
        raise ValueError(f"student and teacher build different numbers of "
                         f"dynamic graphs ({len(graphs_s)} and "
                         f"{len(graphs_t)}); LSP needs matching layers")
    pairs = list(zip(graphs_s, graphs_t))[1:]  # the first is on coordinates
    if not pairs:
        raise ValueError('LSP needs at least two dynamic graphs per model '
                         '(transfer points follow every layer but the first)')
    losses = [lsp_loss(x_s, x_t, e_s, e_t, *similarities)
              for (x_s, e_s), (x_t, e_t) in pairs]
    return torch.stack(losses).mean()


def cascade_distill(student: nn.Module, teacher: nn.Module, train_loader, *,
                    stages: Sequence[int] = (1, 2, 3),
                    configs: Optional[Dict[int, StageConfig]] = None,
                    **kwargs) -> List[StageResult]:
    r"""Runs the cascade: for every stage in :obj:`stages`, a copy of the
    previous student (at the first stage, of :obj:`student`) is set to the
    stage and distilled from the previous result (at the first stage,
    :obj:`teacher`) with :func:`distill`.

    Each student is initialised from its teacher: from the second stage on
    it is a copy of it; the first student loads the teacher's weights when
    both have the same state-dict keys and shapes (say, the same binary
    architecture trained at stage 0), and otherwise keeps its own
    initialisation, as the authors' code does for a float DGCNN teacher
    (the paper finds no significant difference).

    Args:
        student (torch.nn.Module): The binary architecture (not modified).
        teacher (torch.nn.Module): The trained starting model.
        train_loader: Training mini-batches.
        stages (Sequence[int], optional): Increasing stages among 1, 2, 3;
            :obj:`(3,)` is direct distillation. (default: :obj:`(1, 2, 3)`)
        configs (Dict[int, StageConfig], optional): Per-stage optimisation.
            (default: :obj:`PAPER_STAGES`)
        **kwargs (optional): Arguments of :func:`distill`
            (:obj:`val_loader`, :obj:`lsp_weight`, ...). An
            :obj:`lsp_similarity` applies to models whose features may be
            binary (:func:`lsp_similarity_of`): the student from stage 2 on,
            its teacher from stage 3 on; the RBF serves the others, as in
            the paper.

    Returns:
        One :class:`StageResult` per stage; the last holds the final model.
    """
    stages = tuple(stages)
    if (not stages or any(s not in (1, 2, 3) for s in stages)
            or list(stages) != sorted(set(stages))):
        raise ValueError(f"'stages' must be increasing stages among 1, 2, 3 "
                         f"(got {stages!r})")
    configs = PAPER_STAGES if configs is None else configs
    missing = [s for s in stages if s not in configs]
    if missing:
        raise ValueError(f"'configs' has no StageConfig for stage(s) "
                         f"{missing}")
    similarity = kwargs.pop('lsp_similarity', 'rbf')
    results = []
    current = copy.deepcopy(student)
    _init_from(current, teacher)
    teacher_stage = 0
    for stage in stages:
        if results:
            current = copy.deepcopy(teacher)
        set_binarization_stage(current, stage)
        result = distill(
            current, teacher, train_loader, configs[stage], stage=stage,
            lsp_similarity=lsp_similarity_of(stage, similarity),
            teacher_lsp_similarity=lsp_similarity_of(teacher_stage,
                                                     similarity), **kwargs)
        results.append(result)
        teacher, teacher_stage = result.model, stage
    return results


def _init_from(student: nn.Module, teacher: nn.Module) -> bool:
    own, theirs = student.state_dict(), teacher.state_dict()
    if own.keys() != theirs.keys() or any(
            own[k].shape != theirs[k].shape for k in own):
        return False
    student.load_state_dict(theirs)
    return True
