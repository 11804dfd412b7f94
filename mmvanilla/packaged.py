"""The files the package ships beside its code, in ``mmvanilla/.mim`` as OpenMMLab packages do: ``configs/``,
``tools/`` (the command-line tools) and ``model-index.yml``.

A wheel holds copies of them (``pip install mmvanilla``, ``pip install .``); an editable install (``pip install -e
.``) links them to the checkout's folders, so edits there show at once. Either way a config anywhere inherits them
as ``_base_ = 'mmvanilla::deploy/retinanet_vanillanet13_coco_deploy.py'``, and the tools run as
``python -m mmvanilla TOOL ...`` or ``mmvanilla-TOOL ...`` (:mod:`mmvanilla.cli`).

mmengine finds a package's ``.mim`` through the name listed for it in its table of config packages
(``MODULE2PACKAGE``): it asks the installed distribution of that name where it lies, and an editable install's
record lies in site-packages, not beside the code. :data:`LOCATOR` is listed instead: it names no distribution, so
mmengine imports it and takes the folder of its file, which is this package's folder in every kind of install.

Example:
    >>> config_path('deploy/retinanet_vanillanet13_coco_deploy.py').name
    'retinanet_vanillanet13_coco_deploy.py'
"""
from __future__ import annotations

from pathlib import Path

__all__ = ['LOCATOR', 'MIM', 'config_path', 'packaged_path', 'tool_path']

#: The packaged files' folder.
MIM = Path(__file__).resolve().parent / '.mim'
#: The module whose file's folder holds ``.mim``, as mmengine's table of config packages lists it for ``mmvanilla::``.
LOCATOR = __name__


def packaged_path(*parts: str) -> Path:
    """The path of a packaged file, e.g. ``packaged_path('configs', '_base_')``.

    Raises:
        FileNotFoundError: it is not there; the message says how to install the package so that it is.
    """
    path = MIM.joinpath(*parts)
    if not path.exists():
        if not MIM.is_dir():
            raise FileNotFoundError(
                f'{MIM} is missing: mmvanilla was imported from a folder that was never installed. Install it '
                '(`pip install .`, or `pip install -e .` in a checkout, which links configs/ and tools/ there)')
        raise FileNotFoundError(f'{path} not found: the installed mmvanilla ships no such file')
    return path


def config_path(name: str) -> Path:
    """A packaged config by its path under ``configs/``, e.g. ``'retinanet_vanillanet_tiny_synthetic.py'``."""
    return packaged_path('configs', name)


def tool_path(name: str) -> Path:
    """A packaged command-line tool by its file name, e.g. ``'train.py'``."""
    return packaged_path('tools', name)
