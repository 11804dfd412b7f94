"""The set-up's choice of mmcv build (CPU or CUDA kernels) and its check of the install (tools/mmcv_ops.py)."""
import os
import subprocess
import sys

import pytest
import torch

from .conftest import ROOT

pytestmark = pytest.mark.slow


def mmcv_ops(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / 'tools/mmcv_ops.py'), *args], capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=300)


@pytest.mark.skipif(not torch.version.cuda, reason='needs a CUDA build of torch')
def test_the_build_target_has_cuda_kernels_only_where_nvcc_can_build_them(tmp_path):
    toolkit = tmp_path / 'cuda'
    (toolkit / 'bin').mkdir(parents=True)
    (toolkit / 'bin/nvcc').write_text('#!/bin/sh\n')
    (toolkit / 'bin/nvcc').chmod(0o755)
    asked = mmcv_ops('target', CUDA_HOME=str(toolkit), MMVANILLA_MMCV_CUDA='1')
    assert asked.stdout.strip() == f'cuda{torch.version.cuda}', asked.stderr
    assert mmcv_ops('target', CUDA_HOME=str(tmp_path), MMVANILLA_MMCV_CUDA='1').stdout.strip() == 'cpu'  # no nvcc
    assert mmcv_ops('target', CUDA_HOME=str(toolkit), MMVANILLA_MMCV_CUDA='0').stdout.strip() == 'cpu'
    by_default = mmcv_ops('target', CUDA_HOME=str(toolkit)).stdout.strip()
    assert by_default == (f'cuda{torch.version.cuda}' if torch.cuda.is_available() else 'cpu')  # a GPU to run them


def test_the_check_runs_the_compiled_ops_on_every_device_they_were_built_for():
    built = 'cpu' if not torch.cuda.is_available() else mmcv_ops('target').stdout.strip()
    proc = mmcv_ops('verify', built)
    assert proc.returncode == 0, proc.stderr[-3000:]
    devices = 'the CPU and the GPU' if built != 'cpu' and torch.cuda.is_available() else 'the CPU'
    assert f'mmcv ops built for {built}, nms + RoIAlign run on {devices}, mmdet.models imports' in proc.stdout
