"""Stopping a server the tests or the benches started: the stop a service manager gives, then the one that cannot be
refused."""

from __future__ import annotations

import subprocess


def stop_server(process: subprocess.Popen, grace_s: float = 60.0) -> int:
    """SIGTERM `process`, wait up to `grace_s` seconds for it to shut down cleanly, else SIGKILL it; wait for it in
    both cases (no zombie, its ports and GPU memory released before the next server starts). Returns its status."""
    process.terminate()
    try:
        return process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
