"""The wheel: it carries configs/ as mmvanilla/.mim/configs, and a config anywhere inherits them as ``mmvanilla::``."""
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from mmvanilla.cli import TOOLS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    # Built from a copy: setuptools builds in ./build, whose files from earlier builds (a module since removed) would
    # end up in the wheel, and the checkout stays as it was.
    source = tmp_path_factory.mktemp('source')
    for name in ('pyproject.toml', 'setup.py', 'MANIFEST.in', 'model-index.yml', 'README.md'):
        shutil.copy2(ROOT / name, source / name)
    for name in ('mmvanilla', 'configs', 'tools'):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns('__pycache__', '.mim'))
    out = tmp_path_factory.mktemp('wheel')
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index',
                           '-w', str(out), str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    wheels = list(out.glob('mmvanilla-*.whl'))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_carries_the_package_as_it_is(wheel):
    modules = {p.relative_to(ROOT).as_posix(): p.read_bytes() for p in (ROOT / 'mmvanilla').rglob('*.py')}
    with zipfile.ZipFile(wheel) as archive:
        packed = {name: archive.read(name) for name in archive.namelist() if name.endswith('.py')
                  and not name.startswith('mmvanilla/.mim/')}
    assert packed == modules


def test_the_wheel_carries_every_config_as_it_is(wheel):
    configs = sorted(p for p in (ROOT / 'configs').rglob('*') if p.is_file() and '__pycache__' not in p.parts)
    assert ROOT / 'configs/_base_/datasets/synthetic_coco_detection.py' in configs
    assert ROOT / 'configs/metafiles/vanillanet_imagenet.yml' in configs
    with zipfile.ZipFile(wheel) as archive:
        packed = {name: archive.read(name) for name in archive.namelist() if name.startswith('mmvanilla/.mim/')
                  and not name.startswith('mmvanilla/.mim/tools/')}
    expected = {f'mmvanilla/.mim/configs/{p.relative_to(ROOT / "configs").as_posix()}': p.read_bytes()
                for p in configs}
    expected['mmvanilla/.mim/model-index.yml'] = (ROOT / 'model-index.yml').read_bytes()
    assert packed == expected


def test_the_wheel_carries_the_users_tools_and_leaves_the_checkouts_set_up_out(wheel):
    with zipfile.ZipFile(wheel) as archive:
        packed = {name[len('mmvanilla/.mim/tools/'):]: archive.read(name) for name in archive.namelist()
                  if name.startswith('mmvanilla/.mim/tools/')}
    assert {file for file, _ in TOOLS.values()} <= packed.keys()
    assert 'setup_env.sh' not in packed and 'mmcv_ops.py' not in packed
    assert all(packed[name] == (ROOT / 'tools' / name).read_bytes() for name in packed)


def test_a_users_config_inherits_a_packed_config_after_pip_install(wheel, tmp_path):
    site = tmp_path / 'site'
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', '--target', str(site),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # mmengine 0.10.7 takes `package::folder/file.py` only (a folder is required), and only for the packages of its
    # MODULE2PACKAGE table: importing mmvanilla adds it there.
    (tmp_path / 'my_config.py').write_text(
        "_base_ = 'mmvanilla::deploy/retinanet_vanillanet13_coco_deploy.py'\n"
        'model = dict(bbox_head=dict(num_classes=3))\n')
    script = textwrap.dedent('''
        import sys
        import torch
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        import mmvanilla
        from mmdet.registry import MODELS
        cfg = Config.fromfile('my_config.py')
        init_default_scope(cfg.default_scope)
        with torch.device('meta'):  # VanillaNet-13: the structure is what is checked, not the weights
            model = MODELS.build(cfg.model)
        print(mmvanilla.__file__.startswith(sys.argv[1]), type(model.backbone).__name__, model.backbone.deploy,
              model.bbox_head.num_classes, model.neck.in_channels)
    ''')
    env = {'PATH': '/usr/bin:/bin', 'PYTHONPATH': str(site), 'HOME': str(tmp_path)}
    proc = subprocess.run([sys.executable, '-c', script, str(site)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.split() == ['True', 'VanillaNet', 'True', '3', '[1024,', '2048,', '4096]']
