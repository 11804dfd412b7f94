"""The wheel: it carries configs/ and the tools in mmvanilla/.mim, installs into an environment that already has
torch, mmcv and mmdet without touching them, and works from outside the checkout: a config anywhere inherits the
packaged ones as ``mmvanilla::``, and the tools run as ``python -m mmvanilla TOOL`` and ``mmvanilla-TOOL``."""
import json
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import distribution
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from mmvanilla.cli import TOOLS

pytestmark = pytest.mark.slow

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


@pytest.fixture(scope='module')
def site(wheel, tmp_path_factory):
    """The wheel installed with ``--no-deps`` into a folder of its own, used through ``PYTHONPATH`` on top of the
    environment the tests run in (which has torch, mmcv and mmdet)."""
    site = tmp_path_factory.mktemp('site')
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', '--target', str(site),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return site


def run_installed(site, code: str, *args: str, cwd) -> subprocess.CompletedProcess:
    """Runs ``code`` with the installed wheel first on the path, from ``cwd`` (outside the checkout). Its last line
    of output is the answer (mmengine's log lines may come first)."""
    env = {'PATH': '/usr/bin:/bin', 'PYTHONPATH': str(site), 'HOME': str(cwd)}
    return subprocess.run([sys.executable, '-W', 'ignore', '-c', code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_pip_would_install_the_wheel_alone_into_this_environment(wheel, tmp_path):
    # The metadata's ranges hold for this environment's torch, mmcv and mmdet: resolving the wheel with its
    # dependencies, and no package index, installs nothing else and changes nothing.
    report = tmp_path / 'report.json'
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-index', '--report',
                           str(report), str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    planned = [item['metadata']['name'] for item in json.loads(report.read_text())['install']]
    assert set(planned) <= {'mmvanilla'}, planned
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(archive.read(n).decode() for n in archive.namelist() if n.endswith('.dist-info/METADATA'))
    requires = [Requirement(line.partition(':')[2]) for line in metadata.splitlines()
                if line.startswith('Requires-Dist:')]
    assert {r.name for r in requires} >= {'torch', 'torchvision', 'mmcv', 'mmengine', 'mmdet'}
    pinned = [str(r) for r in requires if any(spec.operator in ('==', '===') for spec in r.specifier)]
    assert not pinned, 'the metadata declares ranges, not pins'


def test_installing_with_no_deps_leaves_torch_mmcv_and_mmdet_as_they_were(wheel, tmp_path):
    before = {name: (distribution(name).version, str(distribution(name).locate_file(''))) for name in
              ('torch', 'torchvision', 'mmcv', 'mmengine', 'mmdet')}
    site = tmp_path / 'site'
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', '--target', str(site),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    after = {name: (distribution(name).version, str(distribution(name).locate_file(''))) for name in before}
    assert after == before
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith('.dist-info')) == ['bin', 'mmvanilla']


def test_nothing_installed_reaches_for_a_checkout(wheel):
    with zipfile.ZipFile(wheel) as archive:
        readers = [name for name in archive.namelist() if name.endswith('.py')
                   and 'parents[' in archive.read(name).decode()]
    assert not readers


@pytest.mark.parametrize('base', ['mmvanilla::deploy/retinanet_vanillanet13_coco_deploy.py',
                                  'mmvanilla::_base_/models/retinanet_vanillanet13.py'])
def test_a_users_config_inherits_a_packed_config_after_pip_install(site, base, tmp_path):
    # mmengine 0.10.7 takes `package::folder/file.py` only (a folder is required), and only for the packages of its
    # MODULE2PACKAGE table: importing mmvanilla adds it there.
    (tmp_path / 'my_config.py').write_text(f"_base_ = '{base}'\nmodel = dict(bbox_head=dict(num_classes=3))\n")
    script = textwrap.dedent('''
        import sys
        import torch
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        import mmvanilla
        from mmdet.registry import MODELS
        cfg = Config.fromfile('my_config.py')
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        with torch.device('meta'):  # VanillaNet-13: the structure is what is checked, not the weights
            model = MODELS.build(cfg.model)
        print(mmvanilla.__file__.startswith(sys.argv[1]), type(model.backbone).__name__, model.bbox_head.num_classes,
              model.neck.in_channels)
    ''')
    proc = run_installed(site, script, str(site), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1].split() == ['True', 'VanillaNet', '3', '[1024,', '2048,', '4096]']


def test_the_installed_tools_and_the_main_job_run_from_outside_the_checkout(site, tmp_path):
    script = textwrap.dedent('''
        import contextlib, io, sys
        from mmvanilla.cli import TOOLS, run_tool
        from mmvanilla.demo import JOBS
        from mmvanilla.packaged import config_path, tool_path
        site = sys.argv[1]
        for name in TOOLS:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                try:
                    run_tool(name, ['--help'])
                except SystemExit as e:
                    assert e.code in (0, None), (name, e.code)
            assert out.getvalue().startswith('usage: '), (name, out.getvalue()[:200])
            assert str(tool_path(TOOLS[name][0])).startswith(site), name
        assert all(str(config_path(job.config)).startswith(site) for job in JOBS)
        print('tools', len(TOOLS))
    ''')
    proc = run_installed(site, script, str(site), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1].split() == ['tools', str(len(TOOLS))]

    # The console scripts and `python -m mmvanilla`, as a user types them; a tool that does real work.
    scripts = run_installed(site, 'import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))',
                            str(site / 'bin/mmvanilla-reparameterize'), '--help', cwd=tmp_path)
    assert scripts.returncode == 0 and 'usage: reparameterize.py' in scripts.stdout, scripts.stderr[-2000:]
    made = run_installed(site, 'import runpy; runpy.run_module("mmvanilla", run_name="__main__")', 'make-synthetic-data',
                         'coco', '--out', 'data', '--num-train', '2', '--num-val', '1', cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    assert (tmp_path / 'data/annotations/instances_val.json').is_file()
