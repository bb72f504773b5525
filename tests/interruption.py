"""Interrupting a command the hard ways, for the tests: SIGKILL at chosen moments, and a full disk.

- `ForkServer`: one Python process imports the package (torch, transformers, trl) once, then forks a fresh child per
  job, so that many runs cost one start-up. The child runs the job's script function; the job itself arms a
  `threading.Timer` that sends the child SIGKILL at its moment (a real kill: no handler, no cleanup runs). The server
  forks before any torch work, so no thread pool is copied into a child.
- `on_small_disk`: a shell command run in a private mount namespace (`unshare`) with a tmpfs of a given size mounted
  at a folder, where writes fail with ENOSPC as on a full disk; the mount vanishes with the namespace, so the command
  checks what it needs inside it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent

SERVER = r"""
import json, os, signal, sys, threading, traceback, warnings
warnings.simplefilter("ignore")
namespace = {}
exec(open(sys.argv[1]).read(), namespace)  # defines run(job); its imports happen here, once

def kill_after(seconds):
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()

namespace["kill_after"] = kill_after
print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            namespace["run"](job)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    print(json.dumps({"killed": killed, "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}), flush=True)
"""


def child_environment() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
            "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"}


class ForkServer:
    """`with ForkServer(script, folder) as server: server.run({...})` runs `run(job)` of `script` (Python source
    that may call `kill_after(seconds)`) in a forked child; returns `{"killed": bool, "exit": code}`."""

    def __init__(self, script: str, folder: Path):
        self.script = Path(folder) / "fork_server_job.py"
        self.script.write_text(script, encoding="utf-8")
        self.log = Path(folder) / "fork_server.log"

    def __enter__(self):
        self.process = subprocess.Popen([sys.executable, "-c", SERVER, str(self.script)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True,
                                        env=child_environment(), cwd=self.script.parent)
        ready = self.process.stdout.readline()
        assert ready.strip() == "ready", self.log.read_text()[-3000:]
        return self

    def run(self, job: dict) -> dict:
        """`{"killed": bool, "exit": code or None, "printed": [the child's stdout lines]}`."""
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        printed = []
        while True:
            line = self.process.stdout.readline()
            assert line, f"the fork server ended:\n{self.log.read_text()[-3000:]}"
            if line.startswith('{"killed"'):
                return {**json.loads(line), "printed": printed}
            printed.append(line.rstrip("\n"))

    def __exit__(self, *exc):
        self.process.stdin.close()
        self.process.wait(timeout=60)


def small_disk_available() -> str | None:
    """Why no tmpfs can be mounted here (None when one can): `unshare` and mount namespaces are needed."""
    if shutil.which("unshare") is None:
        return "no `unshare` command"
    probe = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a mount namespace: {probe.stderr.strip()}"


def on_small_disk(folder: Path, size: str, command: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the shell `command` with a tmpfs of `size` (e.g. "6m") mounted at `folder` (created), in a private mount
    namespace: writes past `size` fail with ENOSPC."""
    folder.mkdir(parents=True, exist_ok=True)
    script = f"mount -t tmpfs -o size={size} tmpfs {folder} && {command}"
    return subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script], capture_output=True,
                          text=True, timeout=timeout, env=child_environment())
