"""Evaluate an end-to-end ONNX detector with onnxruntime on the config's test split (COCO box/mask mAP), beside the
PyTorch deploy form, and time both.

    python tools/test_onnx.py CONFIG FILE.onnx [--checkpoint CHECKPOINT] [--threads N] [--work-dir DIR]
        [--metrics-out FILE.json] [--force] [--cfg-options KEY=VALUE ...]

FILE.onnx comes from tools/export_onnx.py CONFIG CHECKPOINT --part detector. The test split is read, preprocessed
and scored as tools/test.py does (the config's test_dataloader, data_preprocessor and test_evaluator). With
--checkpoint (the one the file was exported from) the PyTorch deploy form runs on the same batches: the table then
has both backends' metrics and milliseconds per image (the model alone, the two alternating batch by batch, on
--threads CPU threads each), and a line says how many images' detections agree box by box.
"""
import argparse

from mmengine.config import DictAction

from mmvanilla.runner import clear_errors, load_config


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('onnx_file')
    parser.add_argument('--checkpoint', help='evaluate and time the PyTorch deploy form of this checkpoint too')
    parser.add_argument('--threads', type=int, help='CPU threads of each backend (default: PyTorch\'s, one per core)')
    parser.add_argument('--no-ema', action='store_true', help='load the checkpoint\'s model weights, not its EMA ones')
    parser.add_argument('--work-dir', help='where the logs go (default: work_dirs/<config name>)')
    parser.add_argument('--metrics-out', help='also write the result to this JSON file')
    parser.add_argument('--force', action='store_true', help='replace the --metrics-out file if it exists')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    args = parser.parse_args()
    with clear_errors():
        from mmvanilla.onnx_eval import evaluate_onnx, format_evaluation  # needs torch >= 2.6: one line otherwise
        if args.threads is not None and args.threads < 1:
            raise ValueError(f'--threads {args.threads}: give a positive number of threads')
        cfg = load_config(args.config, args.work_dir, args.cfg_options)
        result = evaluate_onnx(cfg, args.onnx_file, args.checkpoint, threads=args.threads, use_ema=not args.no_ema,
                               metrics_out=args.metrics_out, force=args.force)
    print(format_evaluation(result))


if __name__ == '__main__':
    main()
