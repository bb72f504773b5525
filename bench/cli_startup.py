#!/usr/bin/env python3
"""Start-up time of the CLI and of `import modeling_ase_mllm`, and what each heavy import costs.

    python bench/cli_startup.py [--repeats 5]

Each line is the median wall time of a fresh `python` process (interpreter start included), as a user waits for
it. `--help` imports no torch, transformers or datasets; `train --help`, which lists every SFTConfig field, does
once, then prints its text from the cache (the row "first" measures it with an empty cache each time).
`import modeling_ase_mllm` registers the Auto classes only once transformers' Auto classes are imported, so the
last rows say what that registration adds.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = ["demo", "caption", "saliency", "convert-eat", "convert", "push", "train", "evaluate", "prepare-data"]
IMPORTS = [
    ("python (nothing)", "pass"),
    ("import modeling_ase_mllm", "import modeling_ase_mllm"),
    ("import torch", "import torch"),
    ("import transformers", "import transformers"),
    ("from transformers import AutoModelForImageTextToText",
     "from transformers import AutoModelForImageTextToText"),
    ("  + import modeling_ase_mllm first (registration runs)",
     "import modeling_ase_mllm\nfrom transformers import AutoModelForImageTextToText"),
    ("import datasets", "import datasets"),
]


def wall(command: list[str], repeats: int, empty_cache: bool = False) -> float:
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "XDG_CACHE_HOME": cache} if empty_cache else None
            started = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per line; the median is shown")
    args = parser.parse_args(argv)
    entry = shutil.which("ase-mllm")
    cli = [entry] if entry else [sys.executable, "-m", "modeling_ase_mllm.cli"]
    rows = [(f"ase-mllm {' '.join(c)} --help".replace("  ", " "), wall([*cli, *c, "--help"], args.repeats))
            for c in [[]] + [[name] for name in COMMANDS]]
    rows.append(("ase-mllm train --help, first (empty cache: renders TRL's parser)",
                 wall([*cli, "train", "--help"], args.repeats, empty_cache=True)))
    rows += [(name, wall([sys.executable, "-c", code], args.repeats)) for name, code in IMPORTS]
    print("| what | seconds (median of %d) |\n|---|---:|" % args.repeats)
    for name, seconds in rows:
        print(f"| `{name}` | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
