"""A benchmark's results as Markdown, JSON and a PNG plot: the machine, then one table per kind of measurement.

It reads the dicts that :func:`~mmvanilla.benchmark.run_benchmark` and
:func:`~mmvanilla.benchmark.run_training_benchmark` return, and measures nothing.
"""
from __future__ import annotations

import json
import os
import os.path as osp

from ..extras import require
from .training import depthwise_label

__all__ = ['deploy_speedups', 'format_markdown', 'format_training_markdown', 'plot', 'write_report']


def deploy_speedups(result: dict) -> list[dict]:
    """For each VanillaNet: batch-1 latency of the training form over the deploy form, plain and optimized."""
    out = []
    by_model = {}
    for row in result['models']:
        by_model.setdefault(row['model'], {})[row['form']] = row['latency_ms']
    for name, forms in by_model.items():
        if 'training' in forms and 'deploy' in forms:
            entry = dict(model=name, training_over_deploy=forms['training'] / forms['deploy'])
            optimized = forms.get('deploy + optimize_for_inference')
            if optimized:
                entry['training_over_optimized'] = forms['training'] / optimized
            out.append(entry)
    return out


def _fmt(value, spec: str = '.1f') -> str:
    return '-' if value is None else format(value, spec)


def format_markdown(result: dict) -> str:
    """The results as Markdown: the machine, then one table per kind of measurement."""
    env, s = result['environment'], result['settings']
    size, batch = s['image_size'], s['batch']
    device = env.get('gpu', f'{env["cpu"]} ({env["cores"]} cores)')
    if result['matmul'] is None:  # training cost only
        return '\n'.join(['# VanillaNet speed benchmark', '',
                          format_training_markdown(result['training']) if result.get('training') else '',
                          f'Whole run: {result["wall_s"]:.0f} s.', ''])
    lines = [
        '# VanillaNet speed benchmark', '',
        f'Machine: {device}; device {env["device"]}, {env["threads"]} threads, {env["dtype"]}; torch '
        f'{env["torch"]}, mmdet {env["mmdet"]}' + (f', onnxruntime {env["onnxruntime"]}' if 'onnxruntime' in env
                                                 else '') + '.',
        f'Reference: fp32 {result["matmul"]["size"]}x{result["matmul"]["size"]} matmul, '
        f'**{result["matmul"]["gflops"]:.0f} GFLOP/s** (median of {result["matmul"]["samples"]} runs interleaved with '
        'the models\'). Each row\'s share of it is taken against the matmuls timed beside that row.',
        f'Latency: median of {s["repeats"]} runs after {s["warmup"]} warm-up runs; throughput, detectors and training '
        f'steps: median of {s["batch_repeats"]} after {s["batch_warmup"]}. FLOPs counted with torch.utils.flop_counter (multiply-add = 2 FLOPs).']
    if result['models']:  # not with --skip-inference
        lines += ['', f'## Classification at {size}x{size}', '',
                  f'| Model | Form | GFLOP | Batch 1 (ms) | GFLOP/s | Share of matmul | Batch {batch} (img/s) | '
                  'onnxruntime batch 1 (ms, share) | Peak memory batch 1 (MB) |',
                  '|---|---|--:|--:|--:|--:|--:|--:|--:|']
    for row in result['models']:
        share = row.get('matmul_share')
        memory = row.get('memory', {}).get('peak_mb')
        onnx = _fmt(row.get('onnx_ms')) + (f' ({100 * row["onnx_matmul_share"]:.0f}%)'
                                            if 'onnx_matmul_share' in row else '')
        lines.append(f'| {row["model"]} | {row["form"]} | {_fmt(row.get("gflop"), ".3g")} | '
                     f'{row["latency_ms"]:.1f} | {_fmt(row.get("gflops_per_s"), ".0f")} | '
                     f'{_fmt(share and 100 * share, ".0f")}{"%" if share else ""} | '
                     f'{_fmt(row.get("throughput"), ".2f")} | {onnx} | {_fmt(memory, ".0f")} |')
    speedups = deploy_speedups(result)
    if speedups:
        lines += ['', 'Training form over deploy form, batch-1 latency: ' + '; '.join(
            f'{e["model"]} {e["training_over_deploy"]:.2f}x' + (
                f' ({e["training_over_optimized"]:.2f}x against the optimized deploy form)'
                if 'training_over_optimized' in e else '') for e in speedups) + '.']
    compiled = [row for row in result['models'] if 'compile_s' in row]
    if compiled:
        lines += ['', 'torch.compile time (first call): ' + '; '.join(
            f'{row["model"]} {row["compile_s"]:.0f} s' for row in compiled) + '.']
    if result['detectors']:
        h, w = s['det_size']
        lines += ['', f'## Detection at {h}x{w} (batch 1, with box decoding and NMS)', '',
                  '| Detector | Form | GFLOP | Latency (ms) | Images/s | Share of matmul | onnxruntime end to end '
                  '(ms, share) | Peak memory (MB) |',
                  '|---|---|--:|--:|--:|--:|--:|--:|']
        for row in result['detectors']:
            memory = row.get('memory', {}).get('peak_mb')
            onnx = _fmt(row.get('onnx_ms'), '.0f') + (f' ({100 * row["onnx_matmul_share"]:.0f}%)'
                                                       if 'onnx_matmul_share' in row else '')
            lines.append(f'| {row["model"]} | {row["form"]} | {row["gflop"]:.0f} | {row["latency_ms"]:.0f} | '
                         f'{row["images_per_s"]:.2f} | {100 * row["matmul_share"]:.0f}% | {onnx} | '
                         f'{_fmt(memory, ".0f")} |')
        exported = [row for row in result['detectors'] if 'onnx_detections' in row]
        if exported:
            lines += ['', 'onnxruntime end to end: the detector exported with its post-processing '
                      '(mmvanilla.export.export_detector), timed on the same input; its detections against PyTorch\'s '
                      '(scores only: random weights give boxes of nearly equal scores, which may rank differently): ' +
                      '; '.join(f'{row["model"]} {row["onnx_detections"][0]} vs {row["onnx_detections"][1]} '
                                'detections' + ('' if row['onnx_score_diff'] is None else
                                                f', scores within {row["onnx_score_diff"]:.1e}')
                                for row in exported) + '.']
    if result['train_steps']:
        lines += ['', f'## Training step at {size}x{size} (forward, backward, SGD update)', '',
                  '| Model | Form | Batch | Step (ms) | Images/s | Kept for backward (MB) |',
                  '|---|---|--:|--:|--:|--:|']
        for row in result['train_steps']:
            lines.append(f'| {row["model"]} | {row["form"]} | {row["batch"]} | {row["step_ms"]:.0f} | '
                         f'{row["images_per_s"]:.2f} | {row["kept_for_backward_mb"]:.0f} |')
        lines += ['', 'Kept for backward: the tensors autograd holds after the forward pass (activations, each '
                  'storage once, parameters not counted); the same on any device.']
    if result['memory_method']:
        lines += ['', 'Peak memory: ' + '; '.join(result['memory_method']) + '.']
    if result.get('training'):
        lines += ['', format_training_markdown(result['training'])]
    lines += ['', f'Whole run: {result["wall_s"]:.0f} s.', '']
    return '\n'.join(lines)


def plot(result: dict, path: str) -> None:
    """Bar charts of batch-1 latency and of the share of the matmul reference, one bar per model and form."""
    matplotlib = require('matplotlib', "the benchmark's plot")
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = result['models']
    labels = [f'{row["model"]}\n{row["form"]}' for row in rows]
    colors = ['tab:gray' if r['form'].startswith('training') else 'tab:green' if 'optimize' in r['form'] or
              'compile' in r['form'] else 'tab:blue' for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 1.8), sharey=True)
    ypos = range(len(rows))
    axes[0].barh(ypos, [r['latency_ms'] for r in rows], color=colors)
    axes[0].set_xlabel('batch-1 latency (ms, lower is better)')
    axes[0].set_yticks(list(ypos), labels, fontsize=7)
    axes[0].invert_yaxis()
    axes[1].barh(ypos, [100 * (r.get('matmul_share') or 0) for r in rows], color=colors)
    axes[1].axvline(100, color='black', linewidth=0.8)
    axes[1].set_xlabel('achieved GFLOP/s, % of fp32 matmul')
    env = result['environment']
    fig.suptitle(f'{env.get("gpu", env["cpu"])}, {env["threads"]} threads, '
                 f'{result["settings"]["image_size"]}px, fp32', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(result: dict, out_dir: str) -> dict[str, str]:
    """Writes ``benchmark.md``, ``benchmark.json`` and ``benchmark.png`` to ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: osp.join(out_dir, f'benchmark.{ext}') for ext in ('md', 'json', 'png')}
    with open(paths['md'], 'w') as f:
        f.write(format_markdown(result))
    with open(paths['json'], 'w') as f:
        json.dump(result, f, indent=1)
    if result['models']:
        plot(result, paths['png'])
    else:
        del paths['png']  # nothing to plot: no inference rows
    return paths


def _ms(row: dict) -> str:
    return row.get('error') or f'{row["ms"]:.1f}'


def _mb(row: dict) -> str:
    return f'{row["peak_mb"] / 1024:.1f}' if 'peak_mb' in row else '-'


def _ratio(a: dict, b: dict | None, key: str) -> str:
    if b is None or key not in a or key not in b:
        return '-'
    return f'{a[key] / b[key]:.2f}x'


def _kept(row: dict) -> str:
    return f'{row["kept_mb"] / 1024:.2f}' if 'kept_mb' in row else '-'


def _cp_label(with_cp) -> str:
    if with_cp is None:
        return '-'
    if isinstance(with_cp, bool):
        return 'on' if with_cp else 'off'
    return 'stages ' + ', '.join(map(str, with_cp))


def _step_table(rows: list[dict], title: str) -> list[str]:
    """Ratios against the last row of a model without the kernel switch (the reference, e.g. ResNet-50), compiled
    rows against the compiled reference."""
    references = {row.get('compiled', False): row for row in rows if 'fast_dwconv' not in row}
    lines = [title, '', '| Model | Depthwise conv | with_cp | Step (ms) | Over reference | Peak memory (GB) | '
             'Over reference | Kept for backward (GB) |', '|---|---|---|--:|--:|--:|--:|--:|']
    for row in rows:
        kernel, cp = row.get('fast_dwconv'), row.get('with_cp')
        reference = references.get(row.get('compiled', False))
        model = row['model'] + (', torch.compile' if row.get('compiled') else '')
        lines.append(f'| {model} | {"-" if kernel is None else depthwise_label(kernel)} | '
                     f'{_cp_label(cp)} | {_ms(row)} | '
                     f'{_ratio(row, reference, "ms")} | {_mb(row)} | {_ratio(row, reference, "peak_mb")} | '
                     f'{_kept(row)} |')
    return lines + ['']


def format_training_markdown(result: dict) -> str:
    """The training benchmark as Markdown tables; ratios are against the last (reference) model of each part."""
    s = result['settings']
    where = result.get('gpu', result['device'])
    lines = ['## Training on the GPU' if 'gpu' in result else '## Training', '',
             f'{where}; torch {result["torch"]}' + (f', CUDA {result["cuda"]}, Triton {result["triton"]}'
                                                    if 'gpu' in result else '') +
             f'; {"AMP (fp16 autocast)" if s["amp"] else "fp32"}; median of {s["repeats"]} steps after '
             f'{s["warmup"]}. Peak memory: torch.cuda.max_memory_allocated over the timed steps. Kept for '
             'backward: the tensors autograd holds after one forward, parameters not counted (not with with_cp, '
             'whose checkpoints hold block inputs outside them, nor compiled).', '']
    if result.get('depthwise'):
        lines += ['### ReLU + depthwise convolution, forward and backward', '',
                  '| Shape (N, C, H, W) | k | dtype | Triton NCHW (ms) | PyTorch NCHW | PyTorch channels_last | '
                  'Best PyTorch over Triton |', '|---|--:|---|--:|--:|--:|--:|']
        for row in result['depthwise']:
            torch_ms = [row[k]['ms'] for k in ('pytorch_nchw', 'pytorch_channels_last') if 'ms' in row[k]]
            speedup = f'{min(torch_ms) / row["triton"]["ms"]:.1f}x' if torch_ms and 'ms' in row['triton'] else '-'
            lines.append(f'| {row["name"]}: {tuple(row["shape"])} | {row["kernel"]} | {row["dtype"]} | '
                         f'{_ms(row["triton"])} | {_ms(row["pytorch_nchw"])} | '
                         f'{_ms(row["pytorch_channels_last"])} | {speedup} |')
        lines.append('')
    h, w = s['det_size']
    for part, title in (('backbone', f'### Backbone training step, {s["det_batch"]} x 3 x {h} x {w}, SGD'),
                        ('detector', f'### Detector training step, {s["det_batch"]} images of {h} x {w}, '
                                     '8 boxes each, AdamW')):
        rows = result.get(part)
        if rows:
            lines += _step_table(rows, title)
    rows = result.get('classifier')
    if rows:
        refs = [r for r in rows if 'depthwise' not in r and 'ms' in r]
        best = min(refs, key=lambda r: r['ms']) if refs else None
        lines += [f'### Classification training step, {s["cls_batch"]} images of {s["cls_size"]} x '
                  f'{s["cls_size"]}, SGD', '', '| Model | Layout | Depthwise conv | Max-pool | Step (ms) | Over the '
                  'fastest reference | Peak memory (GB) | Kept for backward (GB) |',
                  '|---|---|---|---|--:|--:|--:|--:|']
        for row in rows:
            lines.append(f'| {row["model"]} | {row["layout"]} | {row.get("depthwise", "-")} | '
                         f'{row.get("max_pool", "-")} | {_ms(row)} | {_ratio(row, best, "ms")} | {_mb(row)} | '
                         f'{_kept(row)} |')
        lines.append('')
    lines += [f'Training benchmark: {result["wall_s"]:.0f} s.', '']
    return '\n'.join(lines)
