"""The docs' examples run, and their links lead somewhere.

Every fenced code block of README.md and docs/*.md is run here unless the line just before its opening fence says
why not::

    <!-- not run: needs COCO -->

``bash``/``shell`` blocks run with ``bash -euo pipefail``; ``python`` blocks run in this process (blocks with
``>>>`` as doctests). A page's blocks run in order, in one scratch folder that links the checkout's ``configs/`` and
``tools/``, so that what a command writes (``data/``, ``work_dirs/``) lands there and not in the checkout; ``python``
there is the interpreter running these tests. README.md runs first: its quick start makes the tiny synthetic data
set and the small trained RetinaNet (``work_dirs/quick/``) that other pages' examples use. Nothing is substituted:
the examples are written at the size they run at here. A block in any other language, or in none, must carry the
marker, since nothing here could run it.

Every relative link of those pages must name a file of the checkout, and a ``#anchor`` a heading of its page.
"""
from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
RUNNABLE = {'bash': 'bash', 'shell': 'bash', 'python': 'python'}
MARKER = re.compile(r'^<!-- not run: (?P<reason>.*?) -->$')
FENCE = re.compile(r'^```(?P<lang>\S*)\s*$')


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    reason: str | None  # why it is not run; None: it is run

    @property
    def where(self) -> str:
        return f'{self.page.relative_to(ROOT)}:{self.line}'


def blocks_of(page: Path, text: str | None = None) -> list[Block]:
    """The fenced blocks of ``page`` (top-level fences; blocks indented in a list item count too)."""
    lines = (page.read_text() if text is None else text).splitlines()
    found, i = [], 0
    while i < len(lines):
        stripped = lines[i].strip()
        fence = FENCE.match(stripped)
        if fence:
            indent = len(lines[i]) - len(lines[i].lstrip())
            start, body = i, []
            i += 1
            while i < len(lines) and lines[i].strip() != '```':
                body.append(lines[i][indent:])
                i += 1
            marker = MARKER.match(lines[start - 1].strip()) if start else None
            found.append(Block(page, start + 1, fence['lang'], '\n'.join(body) + '\n',
                               marker['reason'].strip() if marker else None))
        i += 1
    return found


def problems_of(blocks: list[Block]) -> list[str]:
    """What is wrong with the marking of ``blocks``: an unmarked block nothing runs, or a marker without a reason."""
    problems = []
    for block in blocks:
        if block.reason is None and block.lang not in RUNNABLE:
            problems.append(f'{block.where}: a ```{block.lang} block that nothing runs: mark it '
                            '<!-- not run: REASON --> on the line before its fence')
        if block.reason == '':
            problems.append(f'{block.where}: "not run" without a reason')
    return problems


ALL_BLOCKS = [b for page in PAGES for b in blocks_of(page)]


# ---------------------------------------------------------------------------------------------- marking (fast)

def test_every_block_is_run_or_says_why_not():
    assert ALL_BLOCKS, 'no code blocks found'
    assert not problems_of(ALL_BLOCKS), '\n'.join(problems_of(ALL_BLOCKS))


def test_a_marker_stands_just_before_a_fence():
    stray = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        for n, line in enumerate(lines):
            if MARKER.match(line.strip()) and not (n + 1 < len(lines) and FENCE.match(lines[n + 1].strip())):
                stray.append(f'{page.relative_to(ROOT)}:{n + 1}')
    assert not stray, f'markers not followed by a fence: {stray}'


def test_the_check_refuses_a_block_it_cannot_run_unless_marked():
    page = ROOT / 'example.md'
    text = ('# Example\n\n```text\nsome output\n```\n\n<!-- not run: output, not a command -->\n```text\nok\n```\n\n'
            '```bash\necho run\n```\n\n<!-- not run:  -->\n```python\npass\n```\n')
    blocks = blocks_of(page, text)
    assert [(b.lang, b.reason) for b in blocks] == [('text', None), ('text', 'output, not a command'),
                                                    ('bash', None), ('python', '')]
    problems = problems_of(blocks)
    assert len(problems) == 2
    assert 'example.md:3' in problems[0] and 'nothing runs' in problems[0]
    assert 'example.md:17' in problems[1] and 'without a reason' in problems[1]


# ------------------------------------------------------------------------------------------------ links (fast)

LINK = re.compile(r'!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+"[^"]*")?\)')


def without_fences(text: str) -> str:
    return re.sub(r'^\s*```.*?^\s*```\s*$', '', text, flags=re.S | re.M)


def prose_of(page: Path) -> str:
    """The page without its code (fenced blocks and inline code), where links are not links."""
    return re.sub(r'`[^`\n]*`', '', without_fences(page.read_text()))


def anchors_of(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    for line in without_fences(page.read_text()).splitlines():
        heading = re.match(r'^#{1,6}\s+(.*?)\s*$', line)
        if heading:
            title = heading[1].replace('`', '').strip().lower()
            anchors.add(re.sub(r' ', '-', re.sub(r'[^\w\- ]', '', title)))
    return anchors


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for match in LINK.finditer(prose_of(page)):
        target = match['target']
        if re.match(r'^[a-z]+:', target):
            continue  # a web address
        path, _, anchor = target.partition('#')
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f'{target}: no such file')
        elif anchor and file.suffix == '.md' and anchor not in anchors_of(file):
            broken.append(f'{target}: no heading #{anchor} in {file.relative_to(ROOT)}')
    assert not broken, broken


def test_docs_index_lists_every_page():
    index = (ROOT / 'docs/README.md').read_text()
    unlisted = [p.name for p in PAGES if p.parent.name == 'docs' and p.name != 'README.md' and
                f']({p.name}' not in index]
    assert not unlisted, f'pages missing from docs/README.md: {unlisted}'


# ------------------------------------------------------------------------------------------------- running (slow)

def scratch_env(folder: Path) -> dict[str, str]:
    """The environment of a block's commands: ``python`` is this interpreter, ``mmvanilla`` the checkout's."""
    shims = folder / '.bin'
    shims.mkdir(exist_ok=True)
    python = shims / 'python'
    if not python.exists():  # a script, not a link: a virtual environment's python knows itself by its path
        python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
        python.chmod(0o755)
    path = os.pathsep.join([str(shims), str(Path(sys.executable).parent), os.environ['PATH']])
    return dict(os.environ, PATH=path, PYTHONUNBUFFERED='1', MPLBACKEND='Agg',
                PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')])))


def run_block(block: Block, folder: Path, globs: dict) -> None:
    """Runs one block in ``folder``; fails the test with its output when it fails."""
    if RUNNABLE[block.lang] == 'bash':
        proc = subprocess.run(['bash', '-euo', 'pipefail', '-c', block.code], cwd=folder, env=scratch_env(folder),
                              capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, (f'{block.where} failed (status {proc.returncode}):\n{block.code}\n'
                                      f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
        return
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        if '>>>' in block.code:
            test = doctest.DocTestParser().get_doctest(block.code, globs, block.where, str(block.page), block.line)
            report = []
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
            result = runner.run(test, out=report.append)
            assert result.failed == 0, ''.join(report)
        else:
            exec(compile(block.code, block.where, 'exec'), globs)
    finally:
        os.chdir(cwd)


def run_page(page: Path, folder: Path) -> int:
    globs = {'__name__': '__main__'}
    blocks = [b for b in ALL_BLOCKS if b.page == page and b.reason is None]
    for block in blocks:
        run_block(block, folder, globs)
    return len(blocks)


@pytest.fixture(scope='session')
def scratch(tmp_path_factory) -> Path:
    """A folder that looks like the checkout to a user's commands, after README.md's blocks ran there."""
    folder = tmp_path_factory.mktemp('docs')
    for name in ('configs', 'tools'):
        (folder / name).symlink_to(ROOT / name)
    assert run_page(ROOT / 'README.md', folder) > 0
    return folder


@pytest.mark.slow
def test_readme_examples_run(scratch):
    assert (scratch / 'work_dirs/quick/deploy.pth').is_file()


RUN_PAGES = [p for p in PAGES if p.name != 'README.md' or p.parent.name == 'docs'
             if any(b.page == p and b.reason is None for b in ALL_BLOCKS)]


@pytest.mark.slow
@pytest.mark.parametrize('page', RUN_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_examples_run(page, scratch):
    assert run_page(page, scratch) > 0
