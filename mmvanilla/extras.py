"""Optional dependencies: imported by the feature that needs them, when it runs, with one line naming the extra that
installs them when they are missing.

- ``deploy``: onnx, onnxruntime, onnxscript, for ONNX export and its check;
- ``benchmark``: matplotlib, for the benchmark's plot.

Example:
    >>> require('json', 'reading JSON').__name__
    'json'
    >>> require('no_such_module', 'flying', extra='deploy')
    Traceback (most recent call last):
    ...
    mmvanilla.extras.MissingExtraError: flying needs no_such_module, which is not installed: pip install 'mmvanilla[deploy]'
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ['EXTRAS', 'MissingExtraError', 'require']

#: The extra that installs each optional package (pyproject.toml's [project.optional-dependencies]).
EXTRAS = {'onnx': 'deploy', 'onnxruntime': 'deploy', 'onnxscript': 'deploy', 'matplotlib': 'benchmark'}


class MissingExtraError(ImportError, RuntimeError):
    """An optional package is not installed. An ``ImportError``, and a ``RuntimeError`` so that the tools print it
    as one line (:func:`mmvanilla.runner.clear_errors`)."""


def require(module: str, feature: str, extra: str | None = None) -> ModuleType:
    """Imports ``module`` for ``feature``.

    Args:
        module (str): The module, e.g. ``'onnxruntime'``.
        feature (str): What needs it, as the message's subject, e.g. ``'ONNX export'``.
        extra (str | None): The extra that installs it. Defaults to None: :data:`EXTRAS`'s for the top-level package.

    Raises:
        MissingExtraError: it is not installed; the message names the extra.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.partition('.')[0]
        if error.name is not None and error.name.partition('.')[0] != top:
            raise  # the package is there, but something it imports is not: its own error says what
        extra = extra or EXTRAS.get(top)
        fix = f"pip install 'mmvanilla[{extra}]'" if extra else f'pip install {top}'
        raise MissingExtraError(f'{feature} needs {top}, which is not installed: {fix}', name=top) from None
