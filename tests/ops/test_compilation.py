"""The Triton kernels compile for a real GPU on any machine, in every setting the launchers choose for VanillaNet's
shapes. Without a GPU the other tests run the kernels through Triton's interpreter, which accepts code a GPU's compiler
refuses; this one runs the compiler (kernel_compilation.py, in a process of its own) for Hopper (sm_90), the first of
its targets. benchmarks/gpu_check.py compiles them for every target (Ampere too) where a GPU is."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .test_depthwise import needs_triton

pytestmark = pytest.mark.slow

KERNELS = {'_dw_conv_kernel', '_dw_weight_grad_kernel', '_max_pool_kernel', '_max_unpool_kernel'}


@needs_triton
def test_every_kernel_the_launchers_choose_compiles_for_hopper():
    env = {key: value for key, value in os.environ.items() if key != 'TRITON_INTERPRET'}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name('kernel_compilation.py')), '90'], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {(row['kernel'], row['arch']) for row in rows} == {(k, arch) for k in KERNELS for arch in (90,)}
    assert all(row['cubin_bytes'] > 0 for row in rows)
    # every dtype, the ReLU inside or not, the input gradient's masked and rotated form, both pool layouts
    assert {t for row in rows for t in row['types']} == {'*fp32', '*fp16', '*bf16', '*i8'}
    conv = [row['constexprs'] for row in rows if row['kernel'] == '_dw_conv_kernel']
    assert {(c['RELU_IN'], c['FLIP'], c['GATE']) for c in conv} >= {(True, False, False), (False, True, True)}
    assert {row['constexprs']['CHANNELS_LAST'] for row in rows if 'pool' in row['kernel']} == {False, True}
