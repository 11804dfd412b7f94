"""tests/tool_server.py: a tool run from the server's forked process ends as it ends from a fresh interpreter."""
import os
import subprocess
import sys
import time

import pytest

from .conftest import ROOT
from .tool_server import ToolServer

pytestmark = pytest.mark.slow  # starts a server that imports torch, mmdet and mmvanilla

SCRIPTS = {
    'refused': [str(ROOT / 'tools/describe_variants.py'), '--size', '0'],
    'raises': ['-c', "raise ValueError('a bug')"],
    'exits with a message': ['-c', "import sys; print('out'); sys.exit('a message')"],
    # The test's name reaches the run's environment, though the server started before the test did.
    'exits 3': ['-c', "import os, sys; print(os.getcwd(), sys.argv[1:], os.environ['PYTEST_CURRENT_TEST']); "
                "sys.exit(3)", 'x'],
    'interrupted': ['-c', 'raise KeyboardInterrupt'],
}


@pytest.fixture(scope='module')
def server():
    server = ToolServer()
    yield server
    server.stop()


@pytest.mark.parametrize('script', SCRIPTS)
def test_a_run_ends_with_the_status_and_output_of_a_fresh_interpreter(server, script, tmp_path):
    args = SCRIPTS[script]
    if args[0] == '-c':  # the server runs files: the same code as a script
        (tmp_path / 'script.py').write_text(args[1])
        args = [str(tmp_path / 'script.py'), *args[2:]]
    command = [sys.executable, *args]
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    fresh = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert server.serves(command, env)
    forked = server.run(command, cwd=tmp_path, env=env, timeout=120)
    assert (forked.returncode, forked.stdout) == (fresh.returncode, fresh.stdout)
    last = [(run.stderr.splitlines() or [''])[-1] for run in (forked, fresh)]
    assert last[0] == last[1]  # the error line, or the traceback's
    assert ('Traceback' in forked.stderr) == ('Traceback' in fresh.stderr)


def test_another_environment_is_not_served(server):
    command = [sys.executable, str(ROOT / 'tools/describe_variants.py')]
    assert not server.serves(command, dict(os.environ, PYTHONUNBUFFERED='1', OTHER='1'))
    assert server.serves(command, dict(os.environ, PYTHONUNBUFFERED='1', PYTEST_CURRENT_TEST='another test'))


def test_a_run_past_its_timeout_is_killed(server, tmp_path):
    (tmp_path / 'nap.py').write_text('import os, time\nopen("pid", "w").write(str(os.getpid()))\ntime.sleep(120)\n')
    command = [sys.executable, str(tmp_path / 'nap.py')]
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        server.run(command, cwd=tmp_path, env=server.env, timeout=2)
    pid = int((tmp_path / 'pid').read_text())
    for _ in range(100):  # the server reaps it as soon as it is killed
        if not os.path.exists(f'/proc/{pid}'):
            break
        time.sleep(0.1)
    assert not os.path.exists(f'/proc/{pid}') and time.monotonic() - start < 60
