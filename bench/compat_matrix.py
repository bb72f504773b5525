"""The Hub folder in every transformers release of the compatibility table, against the pinned stack's own run.

    python bench/compat_matrix.py [--releases 5.25.0 5.5.0 ...] [--out bench/results-compat.md]

The same code as tests/test_compat.py (tests/compat_fixtures.py builds the environments and the checkpoint,
tests/compat_child.py loads it): a tiny ASE-MLLM saved with the development stack is loaded in one cached
environment per release (transformers of that release over the development environment's torch; our package not
importable; the Hub offline) through `AutoModelForImageTextToText` + `AutoProcessor` with `trust_remote_code=True`.
Per release: greedy tokens and `pipeline("image-text-to-text")` text equal to the reference run's, the largest
|logit| difference, and the check's wall time against the reference's (the first build of an environment, which
asks PyPI, is not timed). At the oldest supported release it also runs three `Trainer` steps.
"""

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]

from common import markdown_table  # noqa: E402
from compat_fixtures import OLDEST, TRANSFORMERS_ROWS, compare, run_child, save_checkpoint, transformers_env  # noqa: E402

from modeling_ase_mllm.configuration_ase_mllm import TRANSFORMERS_REQUIREMENT  # noqa: E402


def measure(releases, work: Path) -> tuple[dict, list[dict]]:
    folder, image = save_checkpoint(work)
    reference = run_child(Path(sys.executable), folder, image, work / "reference")
    if "error" in reference:
        raise RuntimeError(reference["traceback"])
    print(f"reference (transformers {reference['transformers']}): {reference['wall_seconds']} s", flush=True)
    rows = []
    for release in releases:
        env = transformers_env(release)
        result = run_child(env.python, folder, image, work / release, train=release == OLDEST)
        row = {"release": release, "result": result, "env": env, **compare(result, reference)}
        rows.append(row)
        print(f"{release}: {row.get('error') or 'loaded'}; {result['wall_seconds']} s", flush=True)
    return reference, rows


def report(reference: dict, rows: list[dict]) -> str:
    table = []
    for row in rows:
        result, seconds = row["result"], row["result"]["wall_seconds"]
        extra = ", ".join(p for p in row["env"].installed if not p.startswith("transformers=="))
        absent = ", ".join(row["env"].absent)
        held = (extra or "—") + (f"; absent: {absent}" if absent else "")
        timing = f"{seconds:.1f} (×{seconds / reference['wall_seconds']:.2f})" + (" incl. Trainer" if "train" in result else "")
        if "error" in row:
            table.append([row["release"], f"refused: `{row['error']}`", "—", "—", "—", timing, held])
            continue
        same = row["tokens_equal"] and row["pipeline_equal"] and row["max_logit_diff"] <= 1e-5
        table.append([row["release"], "loads, generates identically" if same else "**differs**",
                      "yes" if row["tokens_equal"] else "**no**", f"{row['max_logit_diff']:.1e}",
                      "yes" if row["pipeline_equal"] else "**no**", timing, held])
    lines = [
        "# The Hub folder across transformers releases",
        "",
        f"`python bench/compat_matrix.py` on {platform.node()} ({platform.machine()}, Python {platform.python_version()}), "
        f"{time.strftime('%Y-%m-%d')}. Reference: the pinned stack (transformers {reference['transformers']}), "
        f"{reference['wall_seconds']:.1f} s. Supported: transformers `{TRANSFORMERS_REQUIREMENT}`. Seconds are the "
        "whole check (start, load, forward, generate, pipeline), on a shared 2-core machine: noisy.",
        "",
        f"Reference tokens {reference['tokens']}, pipeline text {reference['pipeline_text']!r}.",
        "",
        "\"Installed over the dev stack\": what the release's environment holds besides transformers; \"absent\": its "
        "requirements that neither it nor the dev stack has (5.25.0's `kernels>=0.19.1` is not on the package index "
        "reachable here; the check runs with `USE_HUB_KERNELS=0`, so transformers does not ask for it).",
        "",
        markdown_table(["transformers", "result", "tokens equal", "max logit diff", "pipeline text equal",
                        "seconds (× reference)", "installed over the dev stack"], table),
        "",
    ]
    for row in rows:
        train = row["result"].get("train")
        if train:
            losses = ", ".join(f"{loss:.4f}" for loss in train["losses"])
            lines.append(f"`Trainer` at {row['release']}: losses {losses}; {train['changed_tensors']} of "
                         f"{train['trainable_tensors']} trainable tensors changed.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--releases", nargs="+", default=list(TRANSFORMERS_ROWS))
    parser.add_argument("--out", default=str(HERE / "results-compat.md"))
    args = parser.parse_args(argv)
    for release in args.releases:  # build (or reuse) every environment first, so that building is not timed
        transformers_env(release)
    with tempfile.TemporaryDirectory(prefix="ase-mllm-compat-") as work:
        reference, rows = measure(args.releases, Path(work))
    text = report(reference, rows)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
