"""Fast paths, each behind an availability check.

:func:`depthwise_conv2d` is the series activation's depthwise convolution in Triton (GPU training and inference);
:func:`fast_dwconv_applies` says when the models use it (CUDA, NCHW, not traced; ``MMVANILLA_FAST_DWCONV=0`` turns
it off for a run).
"""
from .depthwise import ENV_SWITCH, depthwise_conv2d, fast_dwconv_applies, runs_on, triton_available

__all__ = ['ENV_SWITCH', 'depthwise_conv2d', 'fast_dwconv_applies', 'runs_on', 'triton_available']
