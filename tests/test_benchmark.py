"""The benchmark (mmvanilla/benchmark/, tools/benchmark.py): what it measures and what it writes.

Behaviour only, on tiny models: no assertion here is about how fast anything runs.
"""
import ast
import json

import pytest
import torch
import torch._inductor.config as inductor_config
from torch import nn

from mmvanilla.benchmark import (BenchmarkSettings, ModelSpec, build_benchmark_model, check_device, compile_model,
                                 count_flops, format_markdown, format_training_markdown, kept_for_backward_mb,
                                 matmul_fn, peak_memory,
                                 quick_settings, quick_training_settings, run_benchmark, run_settings,
                                 run_training_benchmark, time_interleaved, write_report)

from .conftest import RETINANET, ROOT, run_tool

TINY = dict(stem_channels=8, widths=[16, 32], strides=[2, 2])


def test_flops_of_a_convolution_are_two_per_multiply_add():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = torch.rand(2, 3, 16, 16)
    assert count_flops(lambda: conv(x)) == 2 * (2 * 8 * 16 * 16) * (3 * 3 * 3)


def test_deploy_form_counts_fewer_flops_than_training_form():
    flops = {}
    for form in ('training', 'deploy'):
        model = build_benchmark_model(ModelSpec('tiny', 'vanillanet', form, arch=TINY))
        x = torch.rand(1, 3, 32, 32)
        flops[form] = count_flops(lambda: model(x))
    assert 0 < flops['deploy'] < flops['training']


def test_the_matmul_reference_is_a_square_fp32_matmul():
    run, flops = matmul_fn(64)
    out = run()
    assert out.shape == (64, 64) and out.dtype == torch.float32 and flops == 2 * 64 ** 3


def test_timing_alternates_the_functions_and_skips_the_warmup():
    calls = []
    times = time_interleaved(dict(a=lambda: calls.append('a'), b=lambda: calls.append('b')), repeats=3, warmup=1)
    assert calls == ['a', 'b'] * 4
    assert [len(v) for v in times.values()] == [3, 3] and all(t >= 0 for v in times.values() for t in v)


def test_cuda_is_refused_with_a_clear_message_when_there_is_no_gpu():
    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    with pytest.raises(RuntimeError, match='no CUDA GPU'):
        check_device('cuda')
    with pytest.raises(RuntimeError, match='no CUDA GPU'):
        run_benchmark(quick_settings(device='cuda'))


@pytest.mark.slow
def test_the_tool_refuses_cuda_without_a_traceback(tmp_path):
    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    proc = run_tool('benchmark.py', '--quick', '--device', 'cuda', '--out-dir', str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and 'no CUDA GPU' in proc.stderr and 'Traceback' not in proc.stderr


@pytest.mark.slow
def test_a_run_measures_every_form_and_writes_markdown_json_and_a_png(tmp_path):
    # A tiny RetinaNet stands in for RetinaNet VanillaNet-13 and ResNet-50; the deploy form is exported to ONNX
    # and timed with onnxruntime.
    settings = quick_settings(archs=[TINY], detector=True, detector_configs=[('tiny RetinaNet', RETINANET)],
                              onnx=True, threads=1)
    result = run_benchmark(settings)

    forms = [(row['model'], row['form']) for row in result['models']]
    assert forms == [('VanillaNet-custom', 'training'), ('VanillaNet-custom', 'deploy'),
                     ('VanillaNet-custom', 'deploy + optimize_for_inference')]
    for row in result['models']:
        assert row['latency_ms'] > 0 and row['throughput'] > 0 and row['gflop'] > 0
        assert row['matmul_share'] == pytest.approx(row['gflops_per_s'] / row['matmul_gflops'])
    deploy = result['models'][1]
    assert deploy['onnx_ms'] > 0 and deploy['onnx_rel_diff'] < 1e-4
    assert deploy['onnx_matmul_share'] == pytest.approx(
        deploy['gflop'] / (deploy['onnx_ms'] / 1e3) / deploy['onnx_matmul_gflops'])
    assert result['models'][2]['gflop'] == deploy['gflop']  # counted on the plain model
    assert [d['form'] for d in result['detectors']] == ['deploy', 'deploy + optimize_for_inference']
    assert all(d['images_per_s'] > 0 and d['gflop'] > 0 for d in result['detectors'])
    detector, optimized = result['detectors']  # the deploy form also exported end to end, on the same input
    assert detector['onnx_ms'] > 0 and 'onnx_ms' not in optimized
    assert detector['onnx_detections'][0] == detector['onnx_detections'][1] and detector['onnx_score_diff'] < 1e-4
    assert [s['form'] for s in result['train_steps']] == ['training', 'deploy']
    training_step, deploy_step = result['train_steps']
    assert training_step['kept_for_backward_mb'] > deploy_step['kept_for_backward_mb'] > 0  # two convs per layer
    assert result['environment']['threads'] == 1 and result['environment']['cpu']

    paths = write_report(result, str(tmp_path / 'out'))
    markdown = open(paths['md']).read()
    assert markdown == format_markdown(result)
    table = [line for line in markdown.split('## Detection')[0].splitlines() if line.startswith('| VanillaNet')]
    assert len(table) == 3 and all(line.count('|') == 10 for line in table)
    assert f'{deploy["onnx_ms"]:.1f} ({100 * deploy["onnx_matmul_share"]:.0f}%)' in table[1]
    assert '## Detection at 64x96' in markdown and '## Training step' in markdown
    assert f'| {detector["onnx_ms"]:.0f} ({100 * detector["onnx_matmul_share"]:.0f}%) |' in markdown
    assert 'tiny RetinaNet {0} vs {0} detections'.format(detector['onnx_detections'][0]) in markdown
    assert 'Training form over deploy form' in markdown and '1 threads' in markdown
    assert json.load(open(paths['json']))['models'][0]['form'] == 'training'
    assert open(paths['png'], 'rb').read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_peak_memory_is_measured_in_a_fresh_process_above_the_loaded_model():
    memory = peak_memory(ModelSpec('tiny', 'vanillanet', 'deploy', arch=TINY), batch=1, size=(64, 64), threads=1)
    assert memory['peak_mb'] >= 0 and memory['loaded_mb'] > memory['peak_mb']
    assert 'fresh process' in memory['method']


def test_kept_for_backward_counts_each_saved_activation_once_and_no_parameter():
    linear = nn.Linear(8, 16)
    x = torch.randn(4, 8)

    def forward():
        h = linear(x).relu()  # keeps x (4 x 8 floats) and h (4 x 16); the weight is not counted
        return (h * h).sigmoid()  # keeps h twice more, counted once, and its output (4 x 16)
    assert kept_for_backward_mb(forward, linear.parameters()) * 2**20 == 4 * (4 * 8 + 4 * 16 + 4 * 16)


@pytest.mark.slow
def test_the_tool_prints_the_table_and_writes_the_files(tmp_path):
    proc = run_tool('benchmark.py', '--quick', '--threads', '1', '--out-dir', 'out', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '| VanillaNet-custom | deploy |' in proc.stdout and '1 threads' in proc.stdout
    assert {p.name for p in (tmp_path / 'out').iterdir()} == {'benchmark.md', 'benchmark.json', 'benchmark.png'}


def test_default_settings_cover_the_issue():
    s = BenchmarkSettings()
    assert list(s.archs) == ['5', '9', '13'] and s.image_size == 224 and s.det_size == (800, 1333)
    assert s.references and s.detector and s.onnx and s.memory and s.train_step and s.batch > 1
    assert str(ROOT)  # the detector configs resolve from the repository, whatever the working directory


@pytest.mark.slow
def test_the_training_benchmark_times_every_part_and_variant():
    result = run_training_benchmark(quick_training_settings())
    dw, = result['depthwise']
    assert dw['pytorch_nchw']['ms'] > 0 and dw['pytorch_channels_last']['ms'] > 0
    assert 'ms' in dw['triton'] or dw['triton']['error'] == 'no Triton on cpu'
    # On a CPU the kernel never runs, so VanillaNet rows differ by with_cp only; each is a measured step.
    for part in ('backbone', 'detector'):
        assert [row['with_cp'] for row in result[part]] == [False, True, [0, 1, 2]], part  # the tiny net: 4 stages
        assert all(row['ms'] > 0 and row['fast_dwconv'] is False for row in result[part])
        assert result[part][0]['kept_mb'] > 0 and 'kept_mb' not in result[part][1], 'not counted with with_cp'
    assert all(row['kept_mb'] > 0 for row in result['classifier'])
    assert [(row['layout'], row['depthwise'], row['max_pool']) for row in result['classifier']] == [
        ('NCHW', 'PyTorch native', 'PyTorch'), ('channels_last', 'PyTorch native', 'PyTorch')]
    text = format_training_markdown(result)
    for title in ('depthwise convolution, forward and backward', 'Backbone training step', 'Detector training step',
                  'Classification training step'):
        assert title in text



@pytest.mark.slow
def test_compiled_backbone_steps_are_rows_of_their_own_with_their_own_reference():
    result = run_training_benchmark(quick_training_settings(parts=('backbone',), compiled=True))
    *eager, compiled = result['backbone']
    assert [row.get('compiled', False) for row in eager] == [False] * 3
    assert compiled['compiled'] and compiled['with_cp'] is False and compiled['ms'] > 0
    assert 'kept_mb' not in compiled, 'not counted under torch.compile'
    # ratios: each VanillaNet row against the ResNet-50 row of its own kind, eager or compiled
    rows = [dict(model='V', fast_dwconv=True, with_cp=False, ms=30.0),
            dict(model='V', fast_dwconv=True, with_cp=False, compiled=True, ms=20.0),
            dict(model='R', ms=10.0), dict(model='R', compiled=True, ms=8.0)]
    text = format_training_markdown(dict(result, backbone=rows))
    assert '| V | Triton | off | 30.0 | 3.00x |' in text and '| V, torch.compile | Triton | off | 20.0 | 2.50x |' in text

def test_unknown_training_parts_are_refused():
    with pytest.raises(ValueError, match=r"unknown training benchmark parts \['speed'\]"):
        run_training_benchmark(quick_training_settings(parts=('speed',)))


def _process_settings():
    return (torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            inductor_config.freezing)


@pytest.mark.slow
def test_a_run_gives_back_the_threads_tf32_flags_and_inductor_config_it_found():
    before = _process_settings()
    threads = 1 if torch.get_num_threads() != 1 else 2
    result = run_benchmark(quick_settings(threads=threads, compiled=True, training=False, train_step=False))
    assert result['environment']['threads'] == threads
    assert [row['form'] for row in result['models']][-1] == 'deploy + torch.compile'
    assert _process_settings() == before


def test_run_settings_turn_tf32_off_on_a_gpu_and_give_everything_back_even_on_error():
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    original = matmul.allow_tf32, cudnn.allow_tf32, matmul.fp32_precision
    matmul.allow_tf32 = cudnn.allow_tf32 = True  # not the defaults, so that turning them off shows
    try:
        before = _process_settings() + (matmul.fp32_precision,)
        threads = 1 if torch.get_num_threads() != 1 else 2
        with pytest.raises(KeyError):
            with run_settings(torch.device('cuda'), threads):  # only flags are set: no GPU is needed
                assert torch.get_num_threads() == threads
                assert not matmul.allow_tf32 and not cudnn.allow_tf32
                raise KeyError('a measurement failed')
        assert _process_settings() + (matmul.fp32_precision,) == before
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = original[:2]
        matmul.fp32_precision = original[2]


@pytest.mark.slow
def test_compile_model_freezes_the_weights_without_touching_the_global_inductor_config(monkeypatch):
    import torch._inductor.freezing as freezing
    kept_inputs = []

    def freeze(*args, **kwargs):
        graph, preserved = original(*args, **kwargs)
        kept_inputs.append(len(preserved))
        return graph, preserved
    original = freezing.freeze
    monkeypatch.setattr(freezing, 'freeze', freeze)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
    before = inductor_config.freezing
    compiled = compile_model(model)
    assert inductor_config.freezing == before
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)
    assert inductor_config.freezing == before
    assert kept_inputs == [1]  # the weights became constants: only the image is still an input


def test_the_measurements_do_not_import_the_report():
    for name in ('environment', 'inference', 'memory', 'models', 'training'):
        tree = ast.parse((ROOT / 'mmvanilla' / 'benchmark' / f'{name}.py').read_text())
        modules = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        modules += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        assert not any(m and m.split('.')[-1] == 'report' for m in modules), name
