"""Runs ``tools/<tool>.py`` in processes forked from one that has already imported what every tool imports.

A tool started as ``python tools/<tool>.py`` spends about 5 s importing torch, mmengine, mmdet and mmvanilla before
it reads its arguments; the suite runs the tools over a hundred times. The server (this file, run as a script)
imports them once, then forks a process for each run: the tool runs as ``__main__`` in a process of its own, with
its own arguments, working folder, standard streams and exit status, as from the command line, less those imports.
DataLoader workers are forked from the same state. Tests that need a fresh interpreter (signals, console scripts,
an environment of their own) start one themselves.

    server = ToolServer()
    server.run([sys.executable, 'tools/test.py', CONFIG, CHECKPOINT], cwd=folder, env=env, timeout=600)
    server.stop()
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

# What every tool imports (tools/*.py and the modules they reach): imported once, before any fork.
PRELOAD = ('torch', 'torchvision', 'mmengine.runner', 'mmdet.apis', 'mmdet.models', 'mmdet.datasets', 'mmvanilla',
           'mmvanilla.runner', 'mmvanilla.apis')


class ToolServer:
    """A server process for one test process; :meth:`run` is ``subprocess.run(capture_output=True, text=True)``."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix='tool_server_'))
        self.address = str(self.folder / 'socket')
        self.env = dict(os.environ, PYTHONUNBUFFERED='1')
        self.process = subprocess.Popen([sys.executable, __file__, self.address], env=self.env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        said = []  # what the imports logged (an older torch's fallbacks ...), then 'ready'
        while not said or said[-1] not in ('ready\n', ''):
            said.append(self.process.stdout.readline())
        if said[-1] != 'ready\n':
            self.stop()
            raise RuntimeError(f'the tool server did not start: {"".join(said)[-2000:]}')

    def serves(self, command: list[str], env: dict) -> bool:
        """Whether :meth:`run` runs ``command`` as ``subprocess.run`` would: a Python script, in the environment the
        server started with (what it imported may depend on it), but for the name of the test pytest sets."""
        def same(env):
            return {key: value for key, value in env.items() if key != 'PYTEST_CURRENT_TEST'}
        return (self.process.poll() is None and command[0] == sys.executable and len(command) > 1
                and command[1].endswith('.py') and same(env) == same(self.env))

    def run(self, command: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as tmp, socket.socket(socket.AF_UNIX) as conn:
            out, err = Path(tmp, 'stdout'), Path(tmp, 'stderr')
            conn.connect(self.address)
            request = dict(argv=command[1:], cwd=str(cwd), env=env, stdout=str(out), stderr=str(err))
            conn.sendall(json.dumps(request).encode() + b'\n')
            replies = conn.makefile()
            pid = int(replies.readline())
            conn.settimeout(timeout)
            try:
                status = int(replies.readline())
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(command, timeout) from None
            return subprocess.CompletedProcess(command, status, out.read_text(), err.read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait()
        self.process.stdout.close()
        for path in self.folder.iterdir():
            path.unlink()
        self.folder.rmdir()


def _exit_status(error: SystemExit) -> int:
    # As the interpreter ends on SystemExit: None is 0, a number is the status, anything else is printed, 1.
    if error.code is None or isinstance(error.code, int):
        return error.code or 0
    print(error.code, file=sys.stderr)
    return 1


def _run_tool(request: dict) -> None:
    """In the forked process: runs the tool as ``python TOOL ARGS`` would, then ends the process with its status."""
    import atexit
    import runpy
    import threading
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request['stdout'], os.O_WRONLY | os.O_CREAT),
                            (2, request['stderr'], os.O_WRONLY | os.O_CREAT)):
        opened = os.open(path, flags, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    tool = request['argv'][0]
    sys.argv = list(request['argv'])
    sys.path[0] = os.path.dirname(os.path.abspath(tool))
    status = 0
    try:
        runpy.run_path(tool, run_name='__main__')
    except SystemExit as e:
        status = _exit_status(e)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        status = -signal.SIGINT
    except BaseException:  # noqa: BLE001  printed as the interpreter prints it
        sys.excepthook(*sys.exc_info())
        status = 1
    try:
        threading._shutdown()  # as the interpreter does at exit: wait for the threads that are not daemons
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        if status < 0:  # ended by a signal, as the interpreter ends after an uncaught KeyboardInterrupt
            signal.signal(-status, signal.SIG_DFL)
            os.kill(os.getpid(), -status)
        os._exit(status & 0xFF)


def serve(address: str) -> None:
    import importlib
    for module in PRELOAD:
        importlib.import_module(module)
    server = socket.socket(socket.AF_UNIX)
    server.bind(address)
    server.listen()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print('ready', flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            request = json.loads(conn.makefile().readline())
            pid = os.fork()
            if pid == 0:
                conn.close()
                server.close()
                _run_tool(request)
            conn.sendall(f'{pid}\n'.encode())
            _, status = os.waitpid(pid, 0)
            try:
                conn.sendall(f'{os.waitstatus_to_exitcode(status)}\n'.encode())
            except OSError:
                pass  # the test gave up waiting (its timeout) and killed the run


if __name__ == '__main__':
    serve(sys.argv[1])
