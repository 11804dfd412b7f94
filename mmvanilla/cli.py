"""The command-line tools of an installed mmvanilla: ``python -m mmvanilla TOOL [ARGS]`` or ``mmvanilla-TOOL [ARGS]``.

Each runs the packaged ``tools/<tool>.py`` (:mod:`mmvanilla.packaged`), the same file as ``tools/<tool>.py`` in a
checkout, with the same arguments; ``mim train mmvanilla CONFIG`` finds them there too.

    python -m mmvanilla train configs/my_config.py --work-dir work_dirs/mine
    mmvanilla-reparameterize CONFIG CHECKPOINT deploy.pth
    python -m mmvanilla --help            # the tools, one line each
"""
from __future__ import annotations

import runpy
import sys
from collections.abc import Callable, Sequence

from .packaged import tool_path

__all__ = ['TOOLS', 'main', 'run_tool']

#: Each tool's name on the command line: its file in ``tools/`` and what it does.
TOOLS = {
    'train': ('train.py', 'train a detector or classifier from a config (mmdet conventions)'),
    'test': ('test.py', 'evaluate a checkpoint: COCO mAP, or top-1/top-5'),
    'reparameterize': ('reparameterize.py', 'convert a trained checkpoint to the deploy form, checked'),
    'export-onnx': ('export_onnx.py', 'export the deploy form to ONNX, checked with onnxruntime (extra: deploy)'),
    'test-onnx': ('test_onnx.py', 'evaluate an exported detector in onnxruntime beside PyTorch (extra: deploy)'),
    'convert-checkpoint': ('convert_checkpoint.py', "convert a checkpoint of the paper's code to mmvanilla's names"),
    'benchmark': ('benchmark.py', 'speed, FLOPs and memory against ResNet-50 (extra: benchmark)'),
    'demo': ('demo.py', 'the main job: detectors and a classifier trained on generated shapes, on the CPU'),
    'make-synthetic-data': ('make_synthetic_data.py', 'generate the synthetic COCO or image-folder data'),
    'describe-variants': ('describe_variants.py', 'every VanillaNet variant: shapes, parameters, re-parameterization'),
}


def run_tool(name: str, args: Sequence[str]) -> int:
    """Runs tool ``name`` with ``args`` in this process, as ``python tools/<file> ARGS`` would; returns its exit
    status (a tool that ends with ``SystemExit`` passes it on)."""
    if name not in TOOLS:
        raise SystemExit(f'unknown tool {name!r}; the tools: {", ".join(TOOLS)}')
    path = str(tool_path(TOOLS[name][0]))
    argv = sys.argv
    sys.argv = [path, *args]
    try:
        runpy.run_path(path, run_name='__main__')
    finally:
        sys.argv = argv
    return 0


def _usage() -> str:
    width = max(map(len, TOOLS))
    lines = [f'  {name:<{width}}  {what}' for name, (_, what) in TOOLS.items()]
    return ('usage: python -m mmvanilla TOOL [ARGS ...]   (or mmvanilla-TOOL [ARGS ...])\n\n'
            'tools (TOOL --help for its arguments):\n' + '\n'.join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mmvanilla TOOL [ARGS ...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(_usage())
        return 0 if argv else 2
    return run_tool(argv[0], argv[1:])


def _entry_point(name: str) -> Callable[[], int]:
    def entry() -> int:
        return run_tool(name, sys.argv[1:])
    entry.__name__ = entry.__qualname__ = name.replace('-', '_')
    entry.__doc__ = f'``mmvanilla-{name}``: {TOOLS[name][1]}.'
    return entry


# The console scripts (pyproject.toml's [project.scripts]).
train = _entry_point('train')
test = _entry_point('test')
reparameterize = _entry_point('reparameterize')
export_onnx = _entry_point('export-onnx')
test_onnx = _entry_point('test-onnx')
convert_checkpoint = _entry_point('convert-checkpoint')
benchmark = _entry_point('benchmark')
demo = _entry_point('demo')
make_synthetic_data = _entry_point('make-synthetic-data')
describe_variants = _entry_point('describe-variants')
