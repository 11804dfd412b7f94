"""Fast paths, each behind an availability check; the models reach them only through documented switches.

- :func:`depthwise_conv2d`: the series activation's depthwise convolution in Triton (GPU training and inference).
  :func:`fast_dwconv_applies` says when the models use it (CUDA, NCHW, not traced; the models' ``fast_dwconv``
  argument, or ``MMVANILLA_FAST_DWCONV=0`` for a whole run, turns it off).
- :func:`max_pool2d`: the downsampling max-pool in Triton, keeping only an int8 window position per output for
  backward (GPU training); :func:`fast_max_pool_applies` says when the models use it (as above, and only where a
  gradient is needed). :mod:`.availability` holds what the kernels share: whether Triton runs here, the switch,
  and ``is_compiling``/``is_exporting`` on every supported torch.
- :func:`optimize_for_inference`: exact CPU inference modules (oneDNN with prepacked weights, a max-pool without
  indices), where :func:`inference_modules_available` says so.
"""
from .availability import ENV_SWITCH, is_compiling, is_exporting, runs_on, triton_available
from .depthwise import depthwise_conv2d, fast_dwconv_applies
from .inference import PrepackedConv2d, StridedMaxPool2d, inference_modules_available, optimize_for_inference
from .pooling import fast_max_pool_applies, max_pool2d

__all__ = ['ENV_SWITCH', 'PrepackedConv2d', 'StridedMaxPool2d', 'depthwise_conv2d', 'fast_dwconv_applies',
           'fast_max_pool_applies', 'inference_modules_available', 'is_compiling', 'is_exporting', 'max_pool2d',
           'optimize_for_inference', 'runs_on', 'triton_available']
