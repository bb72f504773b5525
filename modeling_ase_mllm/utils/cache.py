"""Where ase-mllm keeps what it can always make again: CoreNLP's jars and SPICE's parses, the rendered
`train --help`, the lmms-eval tasks' saved splits and the test suite's compatibility environments.

The XDG base-directory rule decides it: `$XDG_CACHE_HOME/ase_mllm`, or `~/.cache/ase_mllm` when that variable is
unset or empty. It is read at each call, not at import, so that a test or a user who sets the variable later (or
per process) is obeyed.
"""

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """`<cache root>/ase_mllm/<parts...>`; nothing is created."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base, "ase_mllm", *parts)


if __name__ == "__main__":  # `python3 cache.py spice` prints the folder: how .ci/system-packages asks, before any venv
    import sys

    print(cache_dir(*sys.argv[1:]))
