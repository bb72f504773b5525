"""SPICE, SPICE-L, Precision and Recall through the official SPICE 1.0 jar, on Java 17.

pycocoevalcap ships `spice-1.0.jar` but its wrapper downloads Stanford CoreNLP 3.6.0 at run time and the jar's
own `main` breaks on Java ≥ 15 (it pretty-prints through the removed Nashorn engine). We compile a small entry
class of our own (`java/edu/anu/spice/AseSpiceRunner.java`) against the jar and run it when the user supplies the
two CoreNLP jars (`--spice-corenlp-dir` or `SPICE_CORENLP_DIR`). Without them the four metrics are unavailable,
with the reason; nothing here ever downloads.

One JVM run scores, for every image, the candidate against all its references (SPICE) and against each
reference alone (SPICE-L, Precision, Recall).
"""

import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
RUNNER_SOURCE = Path(__file__).parent / "java" / "edu" / "anu" / "spice" / "AseSpiceRunner.java"
RUNNER_CLASS = "edu.anu.spice.AseSpiceRunner"
PR_VARIANTS = ("independent", "best_f")
SPICE_METRICS = ("SPICE", "SPICE-L", "Precision", "Recall")


@dataclass
class PairScore:
    """SPICE's `All` statistics for one (candidate, references) pair."""

    precision: float
    recall: float
    f: float

    @classmethod
    def from_json(cls, scores: dict) -> "PairScore":
        all_tuples = scores["All"]
        return cls(float(all_tuples["pr"]), float(all_tuples["re"]), float(all_tuples["f"]))


def spice_directory() -> Path:
    import pycocoevalcap

    return Path(list(pycocoevalcap.__path__)[0]) / "spice"


def find_corenlp(corenlp_dir: str | os.PathLike | None = None) -> tuple[Path | None, str | None]:
    """`(folder, None)` when the two CoreNLP 3.6.0 jars are found, else `(None, reason)`."""
    folder = corenlp_dir or os.environ.get("SPICE_CORENLP_DIR")
    if not folder:
        return None, (
            "official SPICE needs the Stanford CoreNLP 3.6.0 jars (stanford-corenlp-3.6.0.jar and "
            "stanford-corenlp-3.6.0-models.jar); no package registry ships them. Point SPICE_CORENLP_DIR or "
            "--spice-corenlp-dir at a folder holding them."
        )
    missing = [name for name in CORENLP_JARS if not (Path(folder) / name).is_file()]
    if missing:
        return None, f"SPICE_CORENLP_DIR={folder} lacks {', '.join(missing)}"
    return Path(folder), None


def require_java(tool: str = "java") -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(
            f"`{tool}` not found: the COCO caption metrics (PTB tokenizer, METEOR, SPICE) run on Java. "
            "Install a JDK/JRE, e.g. `apt-get install default-jre-headless` (add `default-jdk-headless` for SPICE)."
        )
    return path


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ase_mllm" / "spice"


def compile_runner() -> Path:
    """Compile `AseSpiceRunner` against the jar once (cached by source hash); returns the classes folder."""
    source = RUNNER_SOURCE.read_bytes()
    classes = cache_root() / hashlib.sha256(source).hexdigest()[:16]
    if (classes / "edu" / "anu" / "spice" / "AseSpiceRunner.class").is_file():
        return classes
    javac = require_java("javac")
    spice = spice_directory()
    staging = Path(tempfile.mkdtemp(dir=cache_root().parent if cache_root().parent.exists() else None))
    command = [javac, "-cp", f"{spice / 'spice-1.0.jar'}{os.pathsep}{spice / 'lib' / '*'}", "-d", str(staging), str(RUNNER_SOURCE)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"compiling {RUNNER_SOURCE.name} failed:\n{run.stderr}")
    classes.parent.mkdir(parents=True, exist_ok=True)
    if not classes.exists():
        staging.rename(classes)
    return classes


def classpath(corenlp: Path) -> str:
    spice = spice_directory()
    parts = [compile_runner(), spice / "spice-1.0.jar", spice / "lib" / "*", *(corenlp / name for name in CORENLP_JARS)]
    return os.pathsep.join(str(part) for part in parts)


def spice_entries(predictions: dict[str, str], references: dict[str, list[str]]) -> list[dict]:
    """SPICE input: one entry per image (all references) and one per (image, reference j)."""
    entries = []
    for image_id, caption in predictions.items():
        entries.append({"image_id": f"all|{image_id}", "test": caption, "refs": list(references[image_id])})
        entries += [
            {"image_id": f"ref{j}|{image_id}", "test": caption, "refs": [reference]}
            for j, reference in enumerate(references[image_id])
        ]
    return entries


def run_spice(entries: list[dict], corenlp: Path, threads: int | None = None) -> dict[str, PairScore]:
    """Score the entries in one JVM run; returns `entry image_id → PairScore`."""
    java = require_java()
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.json", Path(folder) / "out.json"
        source.write_text(json.dumps(entries), encoding="utf-8")
        command = [java, "-Xmx8G", "-cp", classpath(corenlp), RUNNER_CLASS, str(source), str(target)]
        if threads:
            command += ["-threads", str(threads)]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0 or not target.is_file():
            raise RuntimeError(f"SPICE failed (exit {run.returncode}):\n{run.stderr[-4000:]}")
        results = json.loads(target.read_text(encoding="utf-8"))
    return {str(item["image_id"]): PairScore.from_json(item["scores"]) for item in results}


def aggregate_spice(scores: dict[str, PairScore], image_ids: list[str], pr_variant: str = "independent") -> dict:
    """SPICE-family corpus scores from per-pair statistics keyed `all|<id>` and `ref<j>|<id>`.

    - SPICE: mean over images of F against all references (images whose F is NaN are skipped, as SPICE's own
      macro average does).
    - SPICE-L: mean over images of the best F against a single reference.
    - Precision / Recall: mean over images of the best single-reference tuple precision / recall;
      `pr_variant="independent"` takes each maximum on its own, `"best_f"` takes both from the best-F reference.
    """
    if pr_variant not in PR_VARIANTS:
        raise ValueError(f"pr_variant must be one of {PR_VARIANTS}, got {pr_variant!r}")
    per_reference: dict[str, list[PairScore]] = {}
    for key, score in scores.items():
        kind, image_id = key.split("|", 1)
        if kind != "all" and not math.isnan(score.f):
            per_reference.setdefault(image_id, []).append(score)
    spice, spice_l, precision, recall = [], [], [], []
    for image_id in image_ids:
        overall = scores[f"all|{image_id}"]
        if not math.isnan(overall.f):
            spice.append(overall.f)
        pairs = per_reference.get(image_id, [])
        if not pairs:
            continue
        best = max(pairs, key=lambda pair: pair.f)
        spice_l.append(best.f)
        if pr_variant == "independent":
            precision.append(max(pair.precision for pair in pairs))
            recall.append(max(pair.recall for pair in pairs))
        else:
            precision.append(best.precision)
            recall.append(best.recall)

    def mean(values):
        return sum(values) / len(values) if values else float("nan")

    return {"SPICE": mean(spice), "SPICE-L": mean(spice_l), "Precision": mean(precision), "Recall": mean(recall)}


def spice_scores(
    predictions: dict[str, str],
    references: dict[str, list[str]],
    corenlp_dir: str | os.PathLike | None = None,
    pr_variant: str = "independent",
    threads: int | None = None,
) -> tuple[dict | None, str | None]:
    """`(scores, None)` with official SPICE, or `(None, reason)` when it cannot run here."""
    corenlp, reason = find_corenlp(corenlp_dir)
    if corenlp is None:
        return None, reason
    scores = run_spice(spice_entries(predictions, references), corenlp, threads)
    return aggregate_spice(scores, list(predictions), pr_variant), None
