"""Ships configs/, the command-line tools and model-index.yml beside the package as mmvanilla/.mim, OpenMMLab's
convention, so that after ``pip install`` a config anywhere can inherit them, e.g.
``_base_ = 'mmvanilla::deploy/retinanet_vanillanet13_coco_deploy.py'`` (mmengine takes ``package::folder/file.py``
only), and ``python -m mmvanilla TOOL`` runs the tools.

configs/ and tools/ stay the one source. A wheel gets copies, made in the build folder, never in the tree. An
editable install (``pip install -e .``) gets links instead, made in the tree's mmvanilla/.mim (ignored by git), so
that edits in configs/ and tools/ show at once, as mmdet's setup.py does. The metadata lives in pyproject.toml.
"""
import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# What .mim holds, each under the same name as in the checkout.
MIM_ITEMS = ('configs', 'tools', 'model-index.yml')
# Tools for developing mmvanilla itself, which a wheel leaves out (they set up a checkout's environment).
CHECKOUT_TOOLS = ('setup_env.sh', 'mmcv_ops.py')


def link_mim(package: Path) -> None:
    """Links ``package/.mim/<item>`` to the checkout's ``<item>`` (relative links), replacing what was there."""
    mim = package / '.mim'
    mim.mkdir(exist_ok=True)
    for name in MIM_ITEMS:
        link, target = mim / name, os.path.relpath(ROOT / name, mim)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        link.symlink_to(target)


def copy_mim(package: Path) -> None:
    """Copies the checkout's configs, user tools and model index into ``package/.mim``."""
    mim = package / '.mim'
    shutil.rmtree(mim, ignore_errors=True)
    shutil.copytree(ROOT / 'configs', mim / 'configs', ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    shutil.copytree(ROOT / 'tools', mim / 'tools', ignore=shutil.ignore_patterns('__pycache__', '*.pyc',
                                                                                 *CHECKOUT_TOOLS))
    shutil.copy2(ROOT / 'model-index.yml', mim / 'model-index.yml')


class BuildPyWithMim(build_py):
    """``build_py`` that also fills ``mmvanilla/.mim``: copies in the build folder, or links in an editable install."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            link_mim(ROOT / 'mmvanilla')
        else:
            copy_mim(Path(self.build_lib) / 'mmvanilla')


setup(cmdclass={'build_py': BuildPyWithMim})
