"""Whether mmvanilla's Triton kernels can run here, and whether the models may use them for a tensor.

The kernels (:mod:`.depthwise`, :mod:`.pooling`) run on CUDA tensors, and on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1`` before Triton is imported), which the tests use. The models call them only where
:func:`kernels_apply` says so, and fall back to PyTorch's own operators everywhere else.
"""
from __future__ import annotations

import logging
import os

import torch
from mmengine.logging import print_log
from torch import Tensor

#: Whether this torch can register the kernels as operators (``torch.library.custom_op``, torch >= 2.4), which
#: ``torch.compile`` needs; the kernels themselves are written for the Triton that comes with such a torch.
OPERATORS_SUPPORTED = hasattr(torch.library, 'custom_op')

try:
    import triton
    import triton.language as tl
except ImportError:  # a torch build without Triton (CPU-only wheels, some platforms)
    triton = tl = None
if triton is not None and not OPERATORS_SUPPORTED:
    print_log(f'mmvanilla: the Triton kernels need torch >= 2.4 (this is {torch.__version__} with Triton '
              f'{triton.__version__}): PyTorch\'s own depthwise convolution and max-pool run instead',
              logger='current', level=logging.WARNING)
    triton = tl = None

__all__ = ['ENV_SWITCH', 'INTERPRETED', 'OPERATORS_SUPPORTED', 'is_compiling', 'is_exporting', 'kernels_apply',
           'runs_on', 'tl', 'triton', 'triton_available']

# Set to 0 to turn the kernels off for a whole run (the models then use PyTorch's operators everywhere).
ENV_SWITCH = 'MMVANILLA_FAST_DWCONV'

# Triton picks its interpreter (kernels on CPU tensors, for tests) when a kernel is defined, i.e. at import.
INTERPRETED = os.environ.get('TRITON_INTERPRET', '0') == '1'


def is_compiling() -> bool:
    """``torch.compiler.is_compiling()`` (torch >= 2.3), or dynamo's own answer on an older torch."""
    if hasattr(torch.compiler, 'is_compiling'):
        return torch.compiler.is_compiling()
    return torch._dynamo.is_compiling()


def is_exporting() -> bool:
    """``torch.compiler.is_exporting()`` where torch has it; False on a torch without it (nothing exports there
    through ``torch.export``'s non-strict mode)."""
    return torch.compiler.is_exporting() if hasattr(torch.compiler, 'is_exporting') else False


def triton_available() -> bool:
    """Whether Triton imported (it comes with PyTorch's CUDA wheels on Linux) and the kernels can use it (torch >=
    2.4)."""
    return triton is not None


def runs_on(device: torch.device | str) -> bool:
    """Whether the kernels can run on ``device``: CUDA, or the CPU under Triton's interpreter."""
    device = torch.device(device)
    return triton is not None and (device.type == 'cuda' if not INTERPRETED else device.type == 'cpu')


def kernels_apply(x: Tensor, layouts: tuple[torch.memory_format, ...] = (torch.contiguous_format,)) -> bool:
    """What every kernel asks of a model's tensor before it replaces PyTorch's operator.

    A CUDA tensor in fp32, fp16 or bf16, contiguous in one of ``layouts`` (by default NCHW), not under Triton's
    interpreter (which runs on CPU tensors only), unless ``MMVANILLA_FAST_DWCONV=0`` turns the kernels off or the
    call is being traced or exported (TorchScript, ONNX export, ``torch.export`` in its default non-strict mode),
    whose graphs must hold PyTorch's operators only. ``torch.compile`` keeps the kernels, as the operators
    ``torch.ops.mmvanilla.*``; inductor fuses what lies between them.
    """
    return (x.is_cuda and runs_on(x.device) and x.dim() == 4
            and any(x.is_contiguous(memory_format=layout) for layout in layouts)
            and x.dtype in (torch.float32, torch.float16, torch.bfloat16) and os.environ.get(ENV_SWITCH, '1') != '0'
            and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
            and not is_exporting())
