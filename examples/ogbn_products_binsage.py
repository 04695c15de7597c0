r"""GraphSAGE and binary GraphSAGE (BinSAGE, Bahri et al., CVPR 2021,
section 4.3) on OGB-Products: mini-batches of neighbour-sampled subgraphs
(PyG's NeighborLoader, --fanout neighbours per layer), in one process or
in several with PyTorch's distributed data parallel (DDP).

Data goes through ogb's own PygNodePropPredDataset with the official
sales-ranking split, from --root (a folder holding ogbn_products/raw/, as
ogb's download unpacks it), else $PYG_QGNN_DATA, else ../shared/data;
without a copy, a SYNTHETIC graph written in the same raw OGB layout
(planted partition; --synthetic-nodes) runs the whole path offline, ogb's
processing included. Every epoch is scored on the validation nodes
(sampled like training) and the best one is kept; that model is then run
over the full graph layer by layer (every neighbour, --eval-batch-size
nodes at a time) and scored with ogb's Evaluator.

--distill TEACHER.safetensors trains with logit matching from a float
GraphSAGE saved by an earlier --model sage --save run (same --hidden and
--layers). Several processes: start the script with torchrun; each samples
its own shard of the training nodes, gradients are averaged, metrics summed
over processes, and only rank 0 prints and writes files.

Columns: model; processes; the selected epoch of those run; validation
accuracy of the selection (sampled); train, validation and test accuracy of
full-graph inference (ogb Evaluator); for BinSAGE, the deployed model's
test accuracy and whether its predictions equal the fake-quantized ones;
bytes the model stores (deployed form for BinSAGE); seconds of training.

    python examples/ogbn_products_binsage.py --model sage \
        --save sage.safetensors
    python examples/ogbn_products_binsage.py --model binsage \
        --distill sage.safetensors
    torchrun --nproc_per_node=2 examples/ogbn_products_binsage.py \
        --model binsage --batch-size 512
"""
import argparse
import json
import os
import sys
import tempfile

import torch
import torch_geometric.typing
from torch_geometric.nn.models import GraphSAGE
from tqdm.auto import tqdm

from pyg_qgnn import cli, deploy
from pyg_qgnn.datasets.ogbn import load_ogbn
from pyg_qgnn.nn import BinGraphSAGE
from pyg_qgnn.train import distributed, markdown_table, seed_everything
from pyg_qgnn.train.pointcloud import plot_curves
from pyg_qgnn.train.sampled import (
    check_fanouts,
    layerwise_inference,
    score_splits,
    train_sampled,
)

DATASET = 'ogbn-products'
MODELS = {'sage': 'GraphSAGE', 'binsage': 'BinGraphSAGE'}


def fanout_list(text: str) -> list:
    r"""Comma-separated neighbour counts, one per layer (-1: all)."""
    try:
        fanouts = [int(part) for part in text.split(',')]
    except ValueError:
        fanouts = None
    if not fanouts or any(f < 1 and f != -1 for f in fanouts):
        raise argparse.ArgumentTypeError(
            f'expected positive integers (or -1 for all neighbours) '
            f'separated by commas, e.g. 15,10,5 (got {text!r})')
    return fanouts


def build_model(kind: str, in_channels: int, num_classes: int, args):
    if kind == 'sage':
        return GraphSAGE(in_channels, args.hidden, args.layers, num_classes,
                         dropout=args.dropout, aggr='mean')
    return BinGraphSAGE(in_channels, args.hidden, args.layers, num_classes,
                        dropout=args.dropout, aggr='mean')


def load_teacher(path: str, in_channels: int, num_classes: int, args):
    r"""The float GraphSAGE of an earlier ``--model sage --save`` run."""
    try:
        return deploy.load(path, build_model('sage', in_channels, num_classes,
                                             args))
    except ValueError as e:
        raise ValueError(f'{e} (the teacher must come from --model sage with '
                         f'the same --hidden {args.hidden} and --layers '
                         f'{args.layers} on the same dataset)') from None


def deployable() -> bool:
    r"""Whether :func:`pyg_qgnn.deploy.convert` can deploy BinSAGE."""
    return 'BinSAGEConv' in deploy.deployable_layers()


def check_arguments(args):
    r"""Combinations and installs, before any work."""
    with cli.user_input('--fanout'):
        check_fanouts(args.fanout, args.layers)
    if args.save_deployed and args.model != 'binsage':
        raise cli.UserError('argument --save-deployed: the deployed binary '
                            'form exists for --model binsage only')
    if args.save_deployed and not deployable():
        raise cli.UserError('argument --save-deployed: this version of '
                            'pyg_qgnn.deploy.convert has no deployed form of '
                            'BinSAGEConv')
    if not (torch_geometric.typing.WITH_PYG_LIB
            or torch_geometric.typing.WITH_TORCH_SPARSE):
        raise cli.UserError('NeighborLoader needs pyg-lib or torch_sparse, '
                            'neither is installed (pip install '
                            '"pyg_qgnn[full]")')
    if args.plot:
        cli.require_module('matplotlib', '--plot', extra='plot')


def score(model, loaded, evaluator, args, device, progress: bool) -> tuple:
    r"""Full-graph layer-wise logits of :obj:`model` and their accuracy on
    each split."""
    logits = layerwise_inference(model, loaded.data, args.eval_batch_size,
                                 device, progress=progress)
    return logits, score_splits(logits, loaded.data.y, loaded.split_idx,
                                evaluator)


def main(args):
    check_arguments(args)
    with cli.user_input('--device'):  # gloo on the CPU, nccl on GPUs
        ctx = distributed.init_distributed(args.device)
    try:
        return run(args, ctx)
    finally:
        distributed.teardown(ctx)


def run(args, ctx):
    say = print if ctx.is_main else (lambda *_, **__: None)
    with distributed.rank_zero_first(ctx), cli.user_input('--root'):
        loaded = load_ogbn(DATASET, args.root,
                           synthetic_nodes=args.synthetic_nodes, log=say)
    data, split_idx = loaded.data, loaded.split_idx
    say(loaded.describe())
    with cli.user_input('--nproc_per_node'):
        distributed.check_world_size(split_idx['train'].numel(), ctx)
    from ogb.nodeproppred import Evaluator
    evaluator = Evaluator(DATASET)
    device = ctx.device
    show = ctx.is_main and not args.no_progress
    teacher_logits = None
    if args.distill:
        with cli.user_input('--distill'):
            teacher = load_teacher(args.distill, data.num_features,
                                   loaded.num_classes, args)
        teacher_logits, teacher_acc = score(teacher.to(device), loaded,
                                            evaluator, args, device, show)
        say(f'teacher {args.distill}: full-graph accuracy '
            + ', '.join(f'{k} {100 * v:.2f}' for k, v in teacher_acc.items()))
    seed_everything(args.seed)
    model = build_model(args.model, data.num_features, loaded.num_classes,
                        args).to(device)
    bar = tqdm(desc='epochs x steps', unit='step', disable=not show)

    def progress(event):
        if event['phase'] == 'step':
            bar.total = args.epochs * event['steps']
            bar.set_postfix(epoch=event['epoch'], loss=f"{event['loss']:.3f}")
            bar.update()
        else:
            bar.set_postfix(epoch=event['epoch'],
                            val=f"{100 * event['val_acc']:.2f}")

    result = train_sampled(
        model, data, split_idx['train'], split_idx['valid'], args.fanout,
        args.epochs, args.batch_size, args.lr,
        teacher_logits=teacher_logits, temperature=args.temperature,
        alpha=args.alpha, context=ctx, seed=args.seed, callback=progress,
        num_workers=args.num_workers)
    bar.close()
    if not ctx.is_main:  # rank 0 scores and writes
        return []
    row = report(args, ctx, loaded, model.eval(), result, evaluator)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump([row], f, indent=2)
        print(f'rows written to {args.json}')
    if args.plot:
        plot_curves([dict(h, phase=row['model']) for h in result.history],
                    args.plot, row['title'])
        print(f'training curves written to {args.plot}')
    return [row]


def report(args, ctx, loaded, model, result, evaluator) -> dict:
    device = ctx.device
    label = MODELS[args.model] + (' (distilled)' if args.distill else '')
    show = not args.no_progress
    logits, acc = score(model, loaded, evaluator, args, device, show)
    row = dict(model=label, dataset=DATASET, source=loaded.kind,
               split=loaded.split, processes=ctx.world_size,
               epochs=args.epochs, selected_epoch=result.epoch,
               val_acc_sampled=result.val_acc, train_acc=acc['train'],
               valid_acc=acc['valid'], test_acc=acc['test'],
               train_seconds=result.seconds, fanout=args.fanout,
               batch_size=args.batch_size, hidden=args.hidden,
               layers=args.layers, seed=args.seed, distill=args.distill,
               history=result.history)
    shipped = model.cpu()
    if args.model == 'binsage' and not deployable():
        print('(no deployed form: this version of pyg_qgnn.deploy.convert '
              'cannot deploy BinSAGEConv; sizes are of the trained model)')
    elif args.model == 'binsage':
        shipped = deploy.convert(shipped)
        deployed_logits, deployed_acc = score(shipped, loaded, evaluator,
                                              args, None, show)
        row.update(deployed_test_acc=deployed_acc['test'],
                   deployed_equal=bool(torch.equal(
                       logits.argmax(-1).cpu(), deployed_logits.argmax(-1))))
        if args.save_deployed:
            row['deployed_file_bytes'] = deploy.save(shipped,
                                                     args.save_deployed)
    with tempfile.TemporaryDirectory() as scratch:
        row['file_bytes'] = deploy.save(
            model, args.save or os.path.join(scratch, 'model.safetensors'))
    row['bytes'] = deploy.nbytes(shipped)
    name = DATASET if not loaded.synthetic else \
        f'a SYNTHETIC stand-in for {DATASET}'
    row['title'] = (f'{label} on {name}, fanout {args.fanout}, '
                    f'{ctx.world_size} process(es): the epoch with the best '
                    f'sampled validation accuracy, scored by full-graph '
                    f'inference ({loaded.split}), seed {args.seed}')
    print(f'\n{row["title"]}')
    deployed = [f"{100 * row['deployed_test_acc']:.2f}",
                'yes' if row['deployed_equal'] else 'NO'] \
        if 'deployed_equal' in row else ['-', '-']
    print(markdown_table(
        ['model', 'processes', 'epoch', 'val acc (sampled)', 'train acc',
         'valid acc', 'test acc', 'deployed test acc',
         'deployed = fake-quant', 'stored bytes', 'train s'],
        [[label, ctx.world_size, f'{result.epoch}/{args.epochs}',
          f'{100 * result.val_acc:.2f}', f"{100 * acc['train']:.2f}",
          f"{100 * acc['valid']:.2f}", f"{100 * acc['test']:.2f}",
          *deployed, row['bytes'], f'{result.seconds:.0f}']]))
    if row.get('deployed_equal') is False:
        print('WARNING: the deployed predictions differ from the '
              'fake-quantized ones', file=sys.stderr)
    for flag, key in (('save', 'file_bytes'),
                      ('save_deployed', 'deployed_file_bytes')):
        if getattr(args, flag):
            print(f'{getattr(args, flag)} written ({row[key]:,} bytes)')
    return row


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('--model', default='binsage',
                        type=cli.choice(list(MODELS)),
                        help='sage: float GraphSAGE (the OGB baseline); '
                        'binsage: binary GraphSAGE (default: binsage)')
    parser.add_argument('--distill', type=cli.existing_path, default=None,
                        metavar='TEACHER.safetensors',
                        help='train with logit matching from this float '
                        'GraphSAGE (written by --model sage --save)')
    parser.add_argument('--temperature', type=cli.positive_float,
                        default=3.0,
                        help='logit matching temperature (default: 3)')
    parser.add_argument('--alpha', type=cli.fraction, default=0.1,
                        help='weight of the logit matching term against the '
                        'cross-entropy (default: 0.1)')
    parser.add_argument('--root', type=cli.existing_dir, default=None,
                        help='folder holding ogbn_products/raw/ (default: '
                        '$PYG_QGNN_DATA, else ../shared/data, else a '
                        'SYNTHETIC graph in the OGB layout)')
    parser.add_argument('--synthetic-nodes', type=cli.int_at_least(10),
                        default=20_000,
                        help='nodes of the synthetic graph used without a '
                        'copy of the data (default: 20000)')
    parser.add_argument('--epochs', type=cli.positive_int, default=20,
                        help='passes over the training nodes (default: 20)')
    parser.add_argument('--batch-size', type=cli.positive_int, default=1024,
                        help='training nodes per step and process '
                        '(default: 1024)')
    parser.add_argument('--fanout', type=fanout_list, default=[15, 10, 5],
                        metavar='N,N,...',
                        help='neighbours sampled per layer, one per layer, '
                        '-1 for all (default: 15,10,5)')
    parser.add_argument('--layers', type=cli.positive_int, default=3,
                        help='GraphSAGE layers (default: 3)')
    parser.add_argument('--hidden', type=cli.positive_int, default=256,
                        help='hidden channels (default: 256)')
    parser.add_argument('--dropout', type=cli.number_in(0, 0.99),
                        default=0.5, help='dropout (default: 0.5)')
    parser.add_argument('--lr', type=cli.positive_float, default=3e-3,
                        help='Adam learning rate (default: 0.003)')
    parser.add_argument('--eval-batch-size', type=cli.positive_int,
                        default=4096,
                        help='nodes per step of full-graph inference '
                        '(default: 4096)')
    parser.add_argument('--seed', type=cli.nonnegative_int, default=0,
                        help='seed of initialisation and sampling '
                        '(default: 0)')
    parser.add_argument('--device', type=cli.choice(['cpu', 'cuda']),
                        default='cpu',
                        help='where each process trains (cuda: one GPU per '
                        'process, nccl) (default: cpu, gloo)')
    parser.add_argument('--num-workers', type=cli.nonnegative_int, default=0,
                        help='sampling worker processes per process '
                        '(default: 0)')
    parser.add_argument('--save', type=cli.output_path, default=None,
                        metavar='PATH',
                        help='write the trained model with deploy.save '
                        '(a --model sage file is a --distill teacher)')
    parser.add_argument('--save-deployed', type=cli.output_path,
                        default=None, metavar='PATH',
                        help='write the deployed BinSAGE (packed bits) '
                        '(--model binsage)')
    cli.add_output_arguments(parser, 'the training curves')
    return parser


if __name__ == '__main__':
    sys.exit(cli.run(main, build_parser()))
