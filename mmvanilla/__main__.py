"""``python -m mmvanilla TOOL [ARGS ...]``: runs one of the packaged command-line tools (:mod:`mmvanilla.cli`)."""
import sys

from .cli import main

if __name__ == '__main__':
    sys.exit(main())
