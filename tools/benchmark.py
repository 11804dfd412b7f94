"""Measure VanillaNet's speed, FLOPs and memory next to ResNet-50, in one run on this machine.

    python tools/benchmark.py [--archs 5 9 13] [--batch 8] [--threads N] [--repeats 10] [--warmup 2]
        [--device {cpu,cuda}] [--skip-classification] [--skip-detector] [--skip-onnx] [--skip-memory]
        [--skip-train-step] [--compile]
        [--skip-inference] [--skip-training] [--training-parts depthwise backbone detector classifier]
        [--out-dir work_dirs/benchmark] [--quick]

Writes benchmark.md, benchmark.json and benchmark.png to --out-dir and prints the Markdown table. --quick runs a
tiny VanillaNet for a few seconds (a smoke test; its figures mean nothing). With --device cuda the run adds the
GPU training cost (mmvanilla/benchmark/training.py): the Triton depthwise kernel against PyTorch, and training
steps of the VanillaNet-13 backbone, RetinaNet and the ImageNet classifiers against ResNet-50, with the kernel on
and off and with_cp. What is measured is described in mmvanilla/benchmark/__init__.py.
"""
import argparse

from mmvanilla.benchmark import (BenchmarkSettings, TrainingSettings, format_markdown, quick_settings, run_benchmark,
                                 write_report)
from mmvanilla.runner import clear_errors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = BenchmarkSettings()
    parser.add_argument('--archs', nargs='+', help=f'VanillaNet variants (5 ... 13; default: {" ".join(defaults.archs)})')
    parser.add_argument('--batch', type=int, default=defaults.batch, help='batch of the throughput runs')
    parser.add_argument('--threads', type=int, help='CPU threads (default: every core this process may use)')
    parser.add_argument('--repeats', type=int, default=defaults.repeats, help='timed runs at batch 1')
    parser.add_argument('--batch-repeats', type=int, default=defaults.batch_repeats,
                        help='timed runs of the throughput batch, the training step and the detectors')
    parser.add_argument('--warmup', type=int, default=defaults.warmup, help='untimed runs before timing')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--skip-classification', action='store_true',
                        help='no classification rows (neither --archs nor the ResNet-50 references)')
    parser.add_argument('--skip-detector', action='store_true', help='no RetinaNet at detection size')
    parser.add_argument('--skip-onnx', action='store_true', help='no onnxruntime latency')
    parser.add_argument('--skip-memory', action='store_true', help='no peak-memory measurement')
    parser.add_argument('--skip-train-step', action='store_true', help='no training-step timing')
    parser.add_argument('--compile', action='store_true',
                        help='also time under torch.compile: the deploy form, and (--device cuda) the backbones\' '
                             'training step')
    parser.add_argument('--skip-inference', action='store_true', help='no classification or detector inference')
    parser.add_argument('--skip-training', action='store_true', help='no GPU training cost (--device cuda)')
    parser.add_argument('--training-parts', nargs='+', choices=list(TrainingSettings().parts),
                        default=list(TrainingSettings().parts), help='what the GPU training cost measures')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    parser.add_argument('--quick', action='store_true', help='a tiny model, a few seconds: a smoke test')
    args = parser.parse_args()

    options = dict(batch=args.batch, threads=args.threads, repeats=args.repeats, batch_repeats=args.batch_repeats,
                   warmup=args.warmup, device=args.device, detector=not args.skip_detector, onnx=not args.skip_onnx,
                   memory=not args.skip_memory, train_step=not args.skip_train_step, compiled=args.compile,
                   inference=not args.skip_inference, training=False if args.skip_training else None,
                   training_settings=TrainingSettings(device=args.device, parts=args.training_parts,
                                                     compiled=args.compile))
    with clear_errors():
        if args.quick and args.archs:
            raise ValueError('--quick times a tiny model of its own and takes no --archs: drop one of the two')
        if args.quick:
            settings = quick_settings(device=args.device, threads=args.threads, compiled=args.compile)
        else:
            settings = BenchmarkSettings(archs=[] if args.skip_classification else args.archs or defaults.archs,
                                         references=not args.skip_classification, **options)
        result = run_benchmark(settings)
        paths = write_report(result, args.out_dir)
    print(format_markdown(result))
    print(f'written: {", ".join(paths.values())}')


if __name__ == '__main__':
    main()
