r"""The compression study of `Khedri et al. (2025)
<https://arxiv.org/abs/2510.22058>`_ on any of its tasks
(:mod:`pyg_qgnn.prune.tasks`): the pruning grid (sparsity :math:`\times`
{global, fine-grained} :math:`\times` {without, with fine-tuning}), the
:math:`L_2` regularisation sweep, the lottery-ticket test and the
quantization comparison, each run several times (seeds, or folds) and
measured as the paper measures: test score, checkpoint size, inference time,
peak memory, CPU and energy (:mod:`pyg_qgnn.profile`).

The sweeps return one record per run and setting; :func:`aggregate` turns
them into mean ± std rows, and :mod:`pyg_qgnn.prune.study_report` into the
paper's tables and figures.
"""
import copy
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from pyg_qgnn.prune.l2 import L2Penalty
from pyg_qgnn.prune.lottery import iterative_magnitude_pruning, snapshot
from pyg_qgnn.prune.magnitude import magnitude_prune, threshold_prune
from pyg_qgnn.prune.masks import layer_sparsity, make_permanent, sparsity
from pyg_qgnn.prune.sparse_checkpoint import checkpoint_bytes
from pyg_qgnn.prune.tasks import Task
from pyg_qgnn.profile import ResourceUsage, measure
from pyg_qgnn.quantize import quantize_model
from pyg_qgnn.train import Method, file_size, seed_everything, summarize

#: The regularisation rates of the paper's Table 17.
L2_RATES = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6,
            0.7, 0.8, 0.9, 1.0, 1e2, 1e3, 1e6)


# Sweeps ######################################################################

def _ident(task: Task, model: str, part: str, run: int) -> dict:
    return dict(part=part, task=task.task, dataset=task.dataset,
                source=task.source, model=model, metric=task.metric, run=run)


def _usage(prefix: str, usage: ResourceUsage) -> dict:
    r"""The fields of :obj:`usage`, named :obj:`<prefix><field>`; the
    energy source (the same for all) once, without prefix."""
    fields = {f'{prefix}time_s': usage.time_s,
              f'{prefix}peak_rss_mb': usage.peak_rss_bytes / 2**20,
              f'{prefix}rss_increase_mb': usage.rss_increase_bytes / 2**20,
              f'{prefix}cpu_percent': usage.cpu_percent,
              f'{prefix}energy_j': usage.energy_j}
    if not prefix:
        fields['energy_source'] = usage.energy_source
    return fields


def _inference_usage(task: Task, model: nn.Module, run: int,
                     repeats: int) -> dict:
    r"""Inference costs of :obj:`model` with its masks folded in (as it
    would be deployed): a mask would add a multiplication per call."""
    deployed = make_permanent(copy.deepcopy(model)).eval()
    call = task.inference(deployed, run)

    def step():
        with torch.inference_mode():
            call()
    return _usage('', measure(step, repeats))


def _timed_training(fn: Callable[[], float]) -> tuple:
    r"""Runs a training once; its score and what it cost."""
    result = []
    usage = measure(lambda: result.append(fn()), repeats=1, warmup=0)
    return result[0], _usage('train_', usage)


def pruning_sweep(task: Task, model_name: str, runs: int,
                  sparsities: Sequence[float], epochs: int,
                  finetune_epochs: int, lr: float = 0.01,
                  finetune_lr: float = 0.005,
                  scopes: Sequence[str] = ('global', 'layer'),
                  repeats: int = 10,
                  progress: Optional[Callable[[], None]] = None) -> List[dict]:
    r"""Per run: trains the dense model, then for each scope and sparsity
    prunes a copy by magnitude, scores it without and with fine-tuning
    (masks fixed) and measures its checkpoint (:func:`save_sparse`, fp32 and
    int8 values, against the dense :func:`pyg_qgnn.deploy.save` file) and
    inference. :obj:`progress()` follows each pruned model."""
    records = []
    for run in task.runs(runs):
        seed_everything(run)
        dense = task.make_model(model_name)
        task.train(dense, run, epochs, lr)
        dense_bytes = file_size(dense)
        for scope in scopes:
            for target in sparsities:
                model = magnitude_prune(copy.deepcopy(dense), target, scope)
                for finetuned in (False, True):
                    if finetuned:
                        score = task.train(model, run, finetune_epochs,
                                           finetune_lr)
                    else:
                        score = task.evaluate(model, run)
                    records.append(dict(
                        _ident(task, model_name, 'prune', run), scope=scope,
                        finetuned=finetuned, sparsity=float(target),
                        achieved=sparsity(model), score=score,
                        dense_bytes=dense_bytes,
                        bytes=checkpoint_bytes(model),
                        bytes_int8=checkpoint_bytes(model, 'int8'),
                        layers=layer_sparsity(model),
                        **_inference_usage(task, model, run, repeats)))
                if progress is not None:
                    progress()
    return records


def l2_sweep(task: Task, model_name: str, runs: int, rates: Sequence[float],
             threshold: float, epochs: int, lr: float = 0.01,
             repeats: int = 10,
             progress: Optional[Callable[[], None]] = None) -> List[dict]:
    r"""Per run and rate: trains a fresh model with the :math:`L_2` penalty
    (measuring the training's cost, as the paper's Table 17), scores it,
    then prunes every weight with :math:`|w| \le` :obj:`threshold` and
    scores it again."""
    records = []
    for run in task.runs(runs):
        for rate in rates:
            seed_everything(run)
            model = task.make_model(model_name)
            score, cost = _timed_training(lambda: task.train(
                model, run, epochs, lr, penalty=L2Penalty(rate)))
            threshold_prune(model, threshold)
            records.append(dict(
                _ident(task, model_name, 'l2', run), rate=float(rate),
                threshold=float(threshold), score=score,
                pruned_score=task.evaluate(model, run),
                achieved=sparsity(model), bytes=checkpoint_bytes(model),
                dense_bytes=file_size(make_permanent(copy.deepcopy(model))),
                **cost, **_inference_usage(task, model, run, repeats)))
            if progress is not None:
                progress()
    return records


def lottery_test(task: Task, model_name: str, runs: int,
                 sparsities: Sequence[float], epochs: int, lr: float = 0.01,
                 progress: Optional[Callable[[], None]] = None) -> List[dict]:
    r"""Per run: :func:`~pyg_qgnn.prune.iterative_magnitude_pruning` from
    the initial weights through :obj:`sparsities` (global scope), each
    ticket against the same masks on fresh random weights."""
    records = []
    for run in task.runs(runs):
        seed_everything(run)
        model = task.make_model(model_name)
        rounds = iterative_magnitude_pruning(
            model, lambda m: task.train(m, run, epochs, lr),
            [s for s in sparsities if s > 0], rewind_to=snapshot(model),
            reinit=lambda: task.make_model(model_name))
        for target, result in zip([0.0] + [s for s in sparsities if s > 0],
                                  rounds):
            records.append(dict(_ident(task, model_name, 'lottery', run),
                                sparsity=float(target),
                                achieved=result.sparsity, ticket=result.ticket,
                                random=result.random))
        if progress is not None:
            progress()
    return records


def quant_comparison(task: Task, model_name: str, runs: int,
                     methods: Sequence[Method], epochs: int,
                     finetune_epochs: int, lr: float = 0.01,
                     finetune_lr: float = 0.005, repeats: int = 10,
                     progress: Optional[Callable[[], None]] = None
                     ) -> List[dict]:
    r"""Per run: trains the float model, then quantizes a copy with each
    method (:func:`~pyg_qgnn.quantize_model`) and fine-tunes it; records the
    test score, training time, :func:`pyg_qgnn.deploy.save` bytes, average
    bits and the cost of fake-quantized inference (the paper's Tables 7
    and 8)."""
    records = []
    for run in task.runs(runs):
        seed_everything(run)
        dense = task.make_model(model_name)
        start = time.perf_counter()
        dense_score = task.train(dense, run, epochs, lr)
        dense_time = time.perf_counter() - start
        dense_bytes = file_size(dense)
        for method in methods:
            if method.name == 'fp32':
                model, score, duration, bits = dense, dense_score, \
                    dense_time, 32.0
            else:
                scheme = method.scheme()
                model = quantize_model(dense, scheme)
                start = time.perf_counter()
                score = task.train(model, run, finetune_epochs, finetune_lr,
                                   penalty=method.penalty(scheme),
                                   quant_lr=method.quant_lr)
                duration = time.perf_counter() - start
                bits = method.average_bits(model, scheme)
            records.append(dict(
                _ident(task, model_name, 'quant', run), method=method.label,
                bits=method.bits, avg_bits=bits, score=score,
                train_time_s=duration, bytes=file_size(model),
                dense_bytes=dense_bytes,
                **_inference_usage(task, model, run, repeats)))
            if progress is not None:
                progress()
    return records


# Aggregation #################################################################

#: The fields that tell a setting apart (a row groups the runs of one).
SETTING = ('part', 'task', 'dataset', 'source', 'model', 'metric', 'scope',
           'finetuned', 'sparsity', 'rate', 'threshold', 'method', 'bits',
           'energy_source')


def aggregate(records: Sequence[dict]) -> List[dict]:
    r"""One row per setting: its fields, the number of runs, and for each
    numeric measurement :obj:`<name>_mean` and :obj:`<name>_std` over runs
    (:obj:`None` where it is unavailable, e.g. energy without RAPL); the
    per-layer sparsities are averaged into :obj:`layers`."""
    groups: Dict[tuple, List[dict]] = {}
    for record in records:
        key = tuple(record.get(f) for f in SETTING)
        groups.setdefault(key, []).append(record)
    rows = []
    for key, members in groups.items():
        row = {f: v for f, v in zip(SETTING, key) if v is not None}
        row['runs'] = len(members)
        for name, value in members[0].items():
            if name in SETTING or name == 'run' or isinstance(value, bool):
                continue
            if name == 'layers':
                row['layers'] = {layer: summarize(
                    [m['layers'][layer] for m in members]).mean
                    for layer in value}
            elif isinstance(value, (int, float)) or value is None:
                values = [m[name] for m in members if m.get(name) is not None]
                if values:
                    stats = summarize(values)
                    row[f'{name}_mean'], row[f'{name}_std'] = stats.mean, \
                        stats.std
                else:
                    row[f'{name}_mean'] = row[f'{name}_std'] = None
        rows.append(row)
    return rows
