"""The package's floors: data flows one way, so imports do too (no circle; models/ imports nothing above it)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'mmvanilla'

# What each floor may import from mmvanilla, besides itself.
ALLOWED_BELOW = {
    'mmvanilla.models': {'mmvanilla.ops'},
    'mmvanilla.ops': set(),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports_of(path: Path) -> set[str]:
    """The mmvanilla modules ``path`` imports, at its top or inside functions."""
    name = module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split('.')
            base = base[:len(base) - node.level + 1] if node.level else []
            target = '.'.join([*base, node.module] if node.module else base)
            found.add(target)
            found.update(f'{target}.{alias.name}' for alias in node.names)  # `from . import x` names a module
    modules = {module_name(p) for p in PACKAGE.rglob('*.py')}
    return {m for m in found if m in modules and m != name}


GRAPH = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob('*.py'))}


def test_the_graph_was_read():
    assert 'mmvanilla.models.vanillanet' in GRAPH['mmvanilla.models.classifier']
    assert 'mmvanilla.apis' in GRAPH['mmvanilla.deploy']


def test_no_module_imports_itself_through_others():
    def cycle_from(start):
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for nxt in GRAPH[node]:
                if nxt == start:
                    return path + [nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    # A package's __init__ importing its own modules is not a circle of code.
    cycles = [c for c in map(cycle_from, GRAPH) if c and not all(m.startswith(c[0] + '.') for m in c[1:-1])]
    assert not cycles, '\n'.join(' -> '.join(c) for c in cycles)


@pytest.mark.parametrize('floor', sorted(ALLOWED_BELOW))
def test_a_lower_floor_imports_nothing_above_it(floor):
    upward = {f'{name} -> {target}' for name, targets in GRAPH.items() if name.startswith(floor)
              for target in targets
              if not target.startswith(floor) and not any(target.startswith(ok) for ok in ALLOWED_BELOW[floor])}
    assert not upward, sorted(upward)


def documented_layout() -> dict[str, str]:
    """The layout section of docs/contributing.md: path -> its one-line description."""
    text = (PACKAGE.parent / 'docs/contributing.md').read_text()
    block = text.split('## Layout', 1)[1].split('```', 2)[1]
    entries = {}
    for line in block.splitlines():
        if line.strip() and not line.startswith(' '):
            path, _, what = line.partition(' ')
            entries[path] = what.strip()
    return entries


def test_the_documented_layout_names_every_module_once_and_nothing_else():
    entries = documented_layout()
    root = PACKAGE.parent
    assert all((root / path).exists() for path in entries), [p for p in entries if not (root / p).exists()]
    assert all(entries.values()), 'every entry says in a line what it holds'
    modules = [p.relative_to(root).as_posix() for p in PACKAGE.rglob('*.py')
               if p.name != '__init__.py' or p.parent == PACKAGE]
    unnamed = [m for m in modules if m not in entries]
    assert not unnamed, f'modules without their line: {unnamed}'
