"""Fast paths, each behind an availability check; the models reach them only through documented switches.

- :func:`depthwise_conv2d`: the series activation's depthwise convolution in Triton (GPU training and inference).
  :func:`fast_dwconv_applies` says when the models use it (CUDA, NCHW, not traced; the models' ``fast_dwconv``
  argument, or ``MMVANILLA_FAST_DWCONV=0`` for a whole run, turns it off).
- :func:`optimize_for_inference`: exact CPU inference modules (oneDNN with prepacked weights, a max-pool without
  indices), where :func:`inference_modules_available` says so.
"""
from .depthwise import ENV_SWITCH, depthwise_conv2d, fast_dwconv_applies, runs_on, triton_available
from .inference import PrepackedConv2d, StridedMaxPool2d, inference_modules_available, optimize_for_inference

__all__ = ['ENV_SWITCH', 'PrepackedConv2d', 'StridedMaxPool2d', 'depthwise_conv2d', 'fast_dwconv_applies',
           'inference_modules_available', 'optimize_for_inference', 'runs_on', 'triton_available']
