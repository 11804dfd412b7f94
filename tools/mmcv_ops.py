"""What tools/setup_env.sh asks of torch and mmcv, runnable on its own (needs only torch; ``verify`` needs mmcv).

    python tools/mmcv_ops.py target          # prints the build target of mmcv's ops: cuda<version> or cpu
    python tools/mmcv_ops.py verify TARGET   # runs nms and RoIAlign on the CPU, and on the GPU when there is one
                                             # and TARGET has CUDA kernels; imports mmdet.models and mmvanilla

The target is "cuda<torch's CUDA version>" when torch is a CUDA build, nvcc can compile kernels (torch's
``CUDA_HOME``: $CUDA_HOME, the nvcc on PATH, or /usr/local/cuda) and a GPU is visible, else "cpu".
MMVANILLA_MMCV_CUDA=1 asks for CUDA kernels without a GPU (a login node building for GPU nodes), =0 never. Without a
GPU they are not built by default: compiling them costs several times the CPU build and nothing here would run
them. The target is part of the key of the cached mmcv wheel, so a wheel without CUDA kernels is never reused
where they are wanted.
"""
import os
import os.path as osp
import sys

import torch


def build_target() -> str:
    """``'cuda<version>'`` if torch is a CUDA build, nvcc is there and a GPU is (or MMVANILLA_MMCV_CUDA=1), else
    ``'cpu'``."""
    wanted = os.environ.get('MMVANILLA_MMCV_CUDA')
    if wanted == '0' or not torch.version.cuda or not (wanted == '1' or torch.cuda.is_available()):
        return 'cpu'
    from torch.utils.cpp_extension import CUDA_HOME
    nvcc = CUDA_HOME is not None and osp.isfile(osp.join(CUDA_HOME, 'bin', 'nvcc'))
    if not nvcc:
        return 'cpu'  # verify() then says that a GPU is here without CUDA kernels, and how to get them
    return f'cuda{torch.version.cuda}'


def verify(target: str) -> list[str]:
    """Runs mmcv's nms and RoIAlign on every device the ops were built for and that is here; returns the devices.

    A visible GPU with a CPU-only build is reported (the ops would fail on it), not run.
    """
    from mmcv.ops import RoIAlign, nms
    devices = ['cpu']
    if torch.cuda.is_available():
        if target == 'cpu':
            print(f'[setup] WARNING: a GPU is visible ({torch.cuda.get_device_name(0)}) but mmcv\'s ops were built '
                  'without CUDA kernels (no nvcc then), so nms and RoIAlign cannot run on it: detectors must run on '
                  f'the CPU. Install the CUDA toolkit {torch.version.cuda} (nvcc on PATH or CUDA_HOME), then: '
                  'make setup')
        else:
            devices.append('cuda')
    reference = None
    for device in devices:
        boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]], device=device)
        scores = torch.tensor([0.9, 0.8, 0.7], device=device)
        _, keep = nms(boxes, scores, iou_threshold=0.5)
        assert keep.tolist() == [0, 2], (device, keep)
        feat = torch.arange(64, dtype=torch.float32, device=device).reshape(1, 1, 8, 8)
        rois = torch.tensor([[0., 0., 0., 4., 4.]], device=device)
        out = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2)(feat, rois)
        assert out.shape == (1, 1, 2, 2) and out.device.type == device, (device, out.shape)
        reference = out.cpu() if reference is None else reference  # the GPU kernel must agree with the CPU one
        assert torch.allclose(out.cpu(), reference), (device, out, reference)
    import mmdet.models  # noqa: F401  (needs the compiled ops)
    import mmvanilla  # noqa: F401
    return devices


def main() -> int:
    if sys.argv[1:2] == ['target']:
        print(build_target())
        return 0
    if sys.argv[1:2] == ['verify'] and len(sys.argv) == 3:
        devices = verify(sys.argv[2])
        print(f'[setup] ok: torch {torch.__version__}, mmcv ops built for {sys.argv[2]}, nms + RoIAlign run on '
              f'{" and ".join("the CPU" if d == "cpu" else "the GPU" for d in devices)}, mmdet.models imports')
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main())
