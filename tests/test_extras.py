"""Optional dependencies (mmvanilla/extras.py) and what an older torch lacks: each missing piece is named in one
line, with the extra or the torch that brings it."""
import re
import subprocess
import sys

import pytest
import torch

from mmvanilla.export import export_onnx, exporter_available
from mmvanilla.extras import MissingExtraError, require
from mmvanilla.models import VanillaNetClassifier
from mmvanilla.ops import triton_available

TINY = dict(stem_channels=8, widths=[16], strides=[2])


def test_a_missing_optional_package_names_the_extra_that_installs_it():
    with pytest.raises(MissingExtraError, match=r"^ONNX export needs onnx_missing, which is not installed: "
                                                r"pip install 'mmvanilla\[deploy\]'$"):
        require('onnx_missing', 'ONNX export', extra='deploy')
    with pytest.raises(RuntimeError):  # so that the tools print it as one line
        require('onnx_missing', 'ONNX export', extra='deploy')
    assert require('json', 'reading JSON').dumps([]) == '[]'


@pytest.mark.slow
def test_the_tools_say_which_extra_a_missing_package_comes_with(tmp_path):
    # onnxruntime made unimportable, as in an environment installed without the deploy extra.
    (tmp_path / 'sitecustomize.py').write_text('import sys\nsys.modules["onnxruntime"] = None\n')
    code = ('from mmvanilla.export import onnxruntime_session\n'
            'from mmvanilla.runner import clear_errors\n'
            'with clear_errors():\n    onnxruntime_session("model.onnx")\n')
    proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={'PYTHONPATH': str(tmp_path), 'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == ("error: running an ONNX file needs onnxruntime, which is not "
                                                    "installed: pip install 'mmvanilla[deploy]'")


@pytest.mark.skipif(exporter_available(), reason='this torch has the exporter (tests/test_export.py)')
def test_a_torch_without_the_exporter_refuses_the_export_in_one_line(tmp_path):
    net = VanillaNetClassifier(TINY, num_classes=3)
    net.set_act_lambda(1.0)
    with pytest.raises(RuntimeError, match=rf'^ONNX export needs torch 2.6 or later .*this is torch '
                                           rf'{re.escape(torch.__version__)}'):
        export_onnx(net, tmp_path / 'net.onnx', input_shape=(1, 3, 32, 32))
    assert not (tmp_path / 'net.onnx').exists()


@pytest.mark.skipif(hasattr(torch.library, 'custom_op'), reason='this torch runs the kernels (tests/ops)')
def test_a_torch_older_than_the_kernels_runs_pytorchs_own_operators():
    assert not triton_available()
    net = VanillaNetClassifier(TINY, num_classes=3)
    net(torch.rand(2, 3, 32, 32)).sum().backward()  # the layers fall back to F.conv2d and F.max_pool2d
