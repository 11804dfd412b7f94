"""Ships configs/ in the wheel as mmvanilla/.mim/configs, OpenMMLab's convention, so that after ``pip install`` a
config anywhere can inherit them, e.g. ``_base_ = 'mmvanilla::deploy/retinanet_vanillanet13_coco_deploy.py'``
(mmengine takes ``package::folder/file.py`` only).

configs/ stays the one source: the copy is made at build time into the build folder, never into the tree. The
metadata lives in pyproject.toml.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithConfigs(build_py):
    """``build_py`` that also copies ``configs/`` and ``model-index.yml`` to ``<build_lib>/mmvanilla/.mim``."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return  # an editable install imports from the tree; see the README on mmvanilla:: there
        mim = Path(self.build_lib) / 'mmvanilla' / '.mim'
        shutil.rmtree(mim, ignore_errors=True)
        shutil.copytree(ROOT / 'configs', mim / 'configs', ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        shutil.copy2(ROOT / 'model-index.yml', mim / 'model-index.yml')


setup(cmdclass={'build_py': BuildPyWithConfigs})
