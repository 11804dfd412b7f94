"""Compiles mmvanilla's Triton kernels for real GPUs on any machine, a GPU or not (run by test_compilation.py).

Triton's compiler needs no GPU: its front end, LLVM and the ``ptxas`` it ships turn a kernel into a cubin for a named
target. Triton's interpreter, which runs the kernels in the tests without a GPU, accepts code that the compiler
refuses (a loop variable whose type changes, shapes ``tl.dot`` cannot take, ...): compiling catches that in CI.

The launchers (``_conv``, ``_weight_grad``, ``_pool``, ``_unpool``) run on meta tensors of VanillaNet's shapes with
the kernels' launch replaced by a recorder, so that the tile settings and flags compiled are the ones the launchers
choose. Run as a script in a process without ``TRITON_INTERPRET``, with the targets to compile for (``90 80``: every
target, the default); prints one JSON line per compiled kernel.
"""
from __future__ import annotations

import json
import os
import sys

import torch

TARGETS = (90, 80)  # Hopper (H100, H200) and Ampere (A100): every target the kernels are for
_TYPES = {torch.float32: 'fp32', torch.float16: 'fp16', torch.bfloat16: 'bf16', torch.int8: 'i8'}


def recorded_launches() -> list[tuple]:
    """``(kernel, args, kwargs)`` of every launch the launchers make for VanillaNet's shapes, in each dtype."""
    from triton.runtime.jit import JITFunction

    from mmvanilla.ops import depthwise, pooling
    launches = []
    run = JITFunction.run
    JITFunction.run = lambda self, *args, grid, warmup, **kwargs: launches.append((self, args, kwargs))
    try:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            # VanillaNet-13 in the detection recipe (4 x 800 x 1216, k 9), VanillaNet-5 in the ImageNet one
            # (128 x 224 x 224, k 7): the first and last stage of each, and planes narrower than a tile.
            for n, c, h, w, k in ((4, 512, 200, 304, 9), (4, 4096, 25, 38, 9), (128, 512, 56, 56, 7),
                                  (128, 4096, 7, 7, 7)):
                x = torch.empty(n, c, h, w, device='meta', dtype=dtype)
                weight = torch.empty(c, 1, k, k, device='meta', dtype=dtype)
                depthwise._conv(x, weight, None, flip=False, relu_input=True, gate=None)
                depthwise._conv(x, weight, weight[:, 0, 0, 0], flip=False, relu_input=False, gate=None)
                depthwise._input_grad(x, weight, x, relu_input=True)
                depthwise._input_grad(x, weight, x, relu_input=False)
                depthwise._weight_grad(x, x, k, relu_input=True)
            for layout in (torch.contiguous_format, torch.channels_last):
                x = torch.empty(128, 1024, 56, 56, device='meta', dtype=dtype).contiguous(memory_format=layout)
                y, pos = pooling._pool(x, 2)
                pooling._unpool(y, pos, 2, 56, 56)
    finally:
        JITFunction.run = run
    return launches


def _type(value) -> str:
    if isinstance(value, torch.Tensor):
        return '*' + _TYPES[value.dtype]
    if isinstance(value, int):
        return 'i32' if -2**31 <= value < 2**31 else 'i64'
    raise TypeError(f'no Triton type for {type(value).__name__}')


def compile_launch(kernel, args: tuple, kwargs: dict, arch: int) -> dict:
    """Compiles one recorded launch for ``sm_<arch>``; returns what was compiled and its shared memory."""
    import triton
    from triton.backends.compiler import GPUTarget
    options = {key: kwargs[key] for key in ('num_warps', 'num_stages') if key in kwargs}
    constexprs = {key: value for key, value in kwargs.items() if key not in options}
    runtime = [name for name in kernel.arg_names if name not in constexprs]
    if len(runtime) != len(args):
        raise TypeError(f'{kernel.__name__}: {len(args)} arguments for {runtime}')
    signature = {name: 'constexpr' if name in constexprs else None for name in kernel.arg_names}
    signature.update({name: _type(value) for name, value in zip(runtime, args)})
    source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    compiled = triton.compile(source, target=GPUTarget('cuda', arch, 32), options=options)
    pointers = sorted({signature[name] for name in runtime if signature[name].startswith('*')})
    return dict(kernel=kernel.__name__, arch=arch, types=pointers, constexprs=dict(sorted(constexprs.items())),
                options=options, shared_bytes=compiled.metadata.shared, cubin_bytes=len(compiled.asm['cubin']))


def main(argv: list[str]) -> int:
    if os.environ.get('TRITON_INTERPRET', '0') == '1':
        print('run without TRITON_INTERPRET: the interpreter replaces the compiler', file=sys.stderr)
        return 2
    targets = [int(arch) for arch in argv] or TARGETS
    seen = set()
    for kernel, args, kwargs in recorded_launches():
        key = (kernel.__name__, tuple(_type(a) for a in args), tuple(sorted(kwargs.items())))
        if key in seen:
            continue
        seen.add(key)
        for arch in targets:
            print(json.dumps(compile_launch(kernel, args, kwargs, arch)), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
