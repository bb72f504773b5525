"""SPICE, SPICE-L, Precision and Recall through the official SPICE 1.0 jar, on Java 17.

pycocoevalcap ships `spice-1.0.jar`, but its `Spice()` fetches Stanford CoreNLP from a zip on nlp.stanford.edu, and
the jar's own `main` fails on Java ≥ 15 (it pretty-prints through the Nashorn engine, which was removed). Here:

- The two CoreNLP 3.6.0 jars (`edu.stanford.nlp:stanford-corenlp:3.6.0`, plain and `models`) come from Maven
  Central on first use, resumably, each checked against the SHA-256 pinned in `CORENLP_JARS`, into the cache
  folder (`$XDG_CACHE_HOME/ase_mllm/spice`) or the folder `SPICE_CORENLP_DIR` / `--spice-corenlp-dir` names.
  `SPICE_NO_DOWNLOAD=1` / `--no-download` forbids fetching; the four metrics are then unavailable, with the reason.
- Our entry class (`java/edu/anu/spice/AseSpiceRunner.java`, compiled against the jar on first use) scores as
  SPICE does. One JVM run scores, for every image, the candidate against all its references (SPICE) and against
  each reference alone (SPICE-L, Precision, Recall), through SPICE's parse cache, which later runs reuse.

    scores, reason = spice_scores({"img1": "warm light on a face"}, {"img1": ["soft light", "a lovely portrait"]})
"""

import hashlib
import http.client
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..utils.cache import cache_dir
from ..utils.files import sha256_of
from .vocabulary import SPICE_METRICS


MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
CORENLP_DIR_ENV = "SPICE_CORENLP_DIR"
NO_DOWNLOAD_ENV = "SPICE_NO_DOWNLOAD"
REPOSITORY_ENV = "SPICE_MAVEN_REPOSITORY"
HEAP_ENV = "SPICE_JAVA_HEAP"
# CoreNLP's models take ~1 GB and its parser one chart per thread, growing with the square of the sentence length
# (one thread on a 54-token caption, a PCCD critique once PTB tokenization has dropped its full stops, peaks at
# 1.5 GB resident in all). 4g holds a few threads on such critiques, leaves room on a 24 GB machine shared with
# other work, and a caption too long for it is reported, never mis-scored.
DEFAULT_HEAP = "4g"
DEFAULT_THREADS = min(os.cpu_count() or 1, 4)
RUNNER_SOURCE = Path(__file__).parent / "java" / "edu" / "anu" / "spice" / "AseSpiceRunner.java"
RUNNER_CLASS = "edu.anu.spice.AseSpiceRunner"
# Java 17 closes java.base to reflection; the parse cache serialises through FST 2.47, which needs these packages.
FST_OPEN_PACKAGES = ("java.lang", "java.util", "java.math", "java.util.concurrent", "java.net", "java.text")
PR_VARIANTS = ("independent", "best_f")


@dataclass(frozen=True)
class MavenJar:
    """A jar in a Maven repository's standard layout, pinned by size and SHA-256 (measured from Maven Central)."""

    group: str
    artifact: str
    version: str
    classifier: str | None
    size: int
    sha256: str

    @property
    def name(self) -> str:
        return f"{self.artifact}-{self.version}" + (f"-{self.classifier}" if self.classifier else "") + ".jar"

    def url(self, repository: str = MAVEN_CENTRAL) -> str:
        return f"{repository.rstrip('/')}/{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.name}"


CORENLP_JARS = (
    MavenJar("edu.stanford.nlp", "stanford-corenlp", "3.6.0", None, 7270741,
             "d341d5863276f55782c5ef73212222d6b3b48e02ae1951ab6de7618d28b12742"),
    MavenJar("edu.stanford.nlp", "stanford-corenlp", "3.6.0", "models", 378116526,
             "d285157bd7887ee3018094b5dbae092e49088b023361ccdb550ee1daf9b2c9bd"),
)


class SpiceUnavailable(RuntimeError):
    """Official SPICE cannot run here, or failed; the message is the reason, and names the caption when one is to blame."""


def cache_root() -> Path:
    return cache_dir("spice")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class SpiceOptions:
    """How official SPICE runs. A field left at None takes its environment variable, then the default.

    corenlp_dir: the folder that holds (or receives) the two CoreNLP jars ($SPICE_CORENLP_DIR, else `cache_root()`).
    download: fetch missing jars (False when $SPICE_NO_DOWNLOAD is set).
    repository: the Maven repository's base URL ($SPICE_MAVEN_REPOSITORY, else Maven Central).
    heap: the JVM's maximum heap, as `java -Xmx` takes it ($SPICE_JAVA_HEAP, else `DEFAULT_HEAP`).
    threads: parsing threads (default: one per processor, at most `DEFAULT_THREADS`; each holds its own chart).
    parse_cache: SPICE's parse cache (an LMDB folder) that runs share (`cache_root()/parses`).
    """

    corenlp_dir: str | os.PathLike | None = None
    download: bool | None = None
    repository: str | None = None
    heap: str | None = None
    threads: int | None = None
    parse_cache: str | os.PathLike | None = None

    def __post_init__(self):
        self.corenlp_dir = Path(self.corenlp_dir or os.environ.get(CORENLP_DIR_ENV) or cache_root())
        if self.download is None:
            self.download = not _env_flag(NO_DOWNLOAD_ENV)
        self.repository = self.repository or os.environ.get(REPOSITORY_ENV) or MAVEN_CENTRAL
        self.heap = str(self.heap or os.environ.get(HEAP_ENV) or DEFAULT_HEAP)
        if not re.fullmatch(r"\d+[kmgKMG]?", self.heap):
            raise ValueError(f"SPICE heap {self.heap!r} (--spice-heap / {HEAP_ENV}) must look like 4g, 6144m")
        self.threads = DEFAULT_THREADS if self.threads is None else self.threads
        if self.threads < 1:
            raise ValueError(f"SPICE threads (--spice-threads) must be at least 1, got {self.threads}")
        self.parse_cache = Path(self.parse_cache or cache_root() / "parses")


def require_java(tool: str = "java") -> str:
    path = shutil.which(tool)
    if path is None:
        raise SpiceUnavailable(
            f"`{tool}` not found: the COCO caption metrics (PTB tokenizer, METEOR, SPICE) run on Java, and SPICE "
            "compiles its entry class with javac. Install a JDK, e.g. `apt-get install default-jdk-headless`."
        )
    return path


# --- the CoreNLP jars -------------------------------------------------------------------------------------------


def missing_jars_message(folder: Path, repository: str, why: str) -> str:
    """What to fetch by hand, and where to put it: the files, their URLs and checksums, the folder, the variable."""
    lines = [f"official SPICE needs Stanford CoreNLP 3.6.0 and {why}. Put these two files into {folder} "
             f"(or set {CORENLP_DIR_ENV} / --spice-corenlp-dir to a folder that holds them):"]
    lines += [f"  {jar.name}  {jar.url(repository)}  sha256 {jar.sha256}" for jar in CORENLP_JARS]
    lines.append(f"e.g. mvn dependency:copy -Dartifact=edu.stanford.nlp:stanford-corenlp:3.6.0[:jar:models] "
                 f"-DoutputDirectory={folder}")
    return "\n".join(lines)


def _fetch_into(url: str, part: Path, size: int) -> None:
    """Append the rest of `url` to `part` (an HTTP Range request when part of it is already there)."""
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.is_file() else 0
    if have == size:
        return
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        if have and response.status != 206:
            have = 0  # the server ignored the range: start again
        with part.open("ab" if have else "wb") as out, tqdm(
            total=size, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[: -len(".part")]
        ) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    received = part.stat().st_size
    if received != size:  # http.client ends a short body quietly
        raise ConnectionError(f"the transfer stopped at {received} of {size} bytes")


def download_jar(jar: MavenJar, folder: Path, repository: str = MAVEN_CENTRAL, attempts: int = 5) -> Path:
    """Fetch `jar` into `folder`, resuming a partial `<name>.part`, and keep it only if its SHA-256 is the pinned one.

    The partial file never counts as the jar: it is renamed into place after the check, and removed when the check
    fails. An interrupted transfer resumes (within this call, then in the next). One process downloads at a time.
    """
    from filelock import FileLock

    url = jar.url(repository)
    folder.mkdir(parents=True, exist_ok=True)
    target, part = folder / jar.name, folder / f"{jar.name}.part"
    with FileLock(str(folder / ".download.lock")):
        if target.is_file():
            return target
        print(f"[spice] downloading {jar.name} ({jar.size / 2**20:.0f} MiB) from {url} into {folder}", file=sys.stderr)
        error = None
        for _ in range(attempts):
            before = part.stat().st_size if part.is_file() else 0
            if before > jar.size:
                part.unlink()
                before = 0
            try:
                _fetch_into(url, part, jar.size)
                break
            except (OSError, http.client.HTTPException) as caught:  # URLError, timeouts, resets, IncompleteRead
                error = caught
                if (part.stat().st_size if part.is_file() else 0) <= before:
                    break  # no progress: unreachable, or refusing
        have = part.stat().st_size if part.is_file() else 0
        if have != jar.size:
            kept = f"; the {have} bytes received are kept in {part} and the next run resumes from there" if have else ""
            raise SpiceUnavailable(missing_jars_message(
                folder, repository, f"downloading {url} failed ({error or f'{have} of {jar.size} bytes'}){kept}"))
        digest = sha256_of(part)
        if digest != jar.sha256:
            part.unlink()
            raise SpiceUnavailable(missing_jars_message(
                folder, repository, f"{url} came back corrupt (SHA-256 {digest}, expected {jar.sha256}; removed)"))
        os.replace(part, target)
    return target


def ensure_corenlp(options: SpiceOptions) -> Path:
    """The folder holding both CoreNLP jars, fetching the missing ones when allowed; else `SpiceUnavailable`."""
    folder = Path(options.corenlp_dir)
    missing = [jar for jar in CORENLP_JARS if not (folder / jar.name).is_file()]
    if missing and not options.download:
        names = " and ".join(jar.name for jar in missing)
        raise SpiceUnavailable(missing_jars_message(
            folder, options.repository, f"{folder} lacks {names}; downloads are off (--no-download or {NO_DOWNLOAD_ENV})"))
    for jar in missing:
        download_jar(jar, folder, options.repository)
    return folder


# --- running SPICE --------------------------------------------------------------------------------------------


def spice_directory() -> Path:
    import pycocoevalcap

    return Path(list(pycocoevalcap.__path__)[0]) / "spice"


def compile_runner() -> Path:
    """Compile `AseSpiceRunner` against the jar once (cached by source hash); returns the classes folder."""
    source = RUNNER_SOURCE.read_bytes()
    classes = cache_root() / f"runner-{hashlib.sha256(source).hexdigest()[:16]}"
    if (classes / "edu" / "anu" / "spice" / "AseSpiceRunner.class").is_file():
        return classes
    javac = require_java("javac")
    spice = spice_directory()
    classes.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=classes.parent, prefix=".compiling-"))
    command = [javac, "-nowarn", "-cp", os.pathsep.join([str(spice / "spice-1.0.jar"), str(spice / "lib" / "*")]),
               "-d", str(staging), str(RUNNER_SOURCE)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise SpiceUnavailable(f"compiling {RUNNER_SOURCE.name} failed:\n{run.stderr[-3000:]}")
    try:
        staging.rename(classes)
    except OSError:  # another process compiled it first
        shutil.rmtree(staging, ignore_errors=True)
    return classes


def classpath(corenlp: Path) -> str:
    spice = spice_directory()
    parts = [compile_runner(), spice / "spice-1.0.jar", spice / "lib" / "*", *(corenlp / jar.name for jar in CORENLP_JARS)]
    return os.pathsep.join(str(part) for part in parts)


@dataclass
class PairScore:
    """SPICE's `All` statistics for one (candidate, references) pair."""

    precision: float
    recall: float
    f: float

    @classmethod
    def from_json(cls, scores: dict) -> "PairScore":
        def number(value):  # SPICE writes NaN, which JSON has no word for, as null
            return math.nan if value is None else float(value)

        all_tuples = scores["All"]
        return cls(number(all_tuples["pr"]), number(all_tuples["re"]), number(all_tuples["f"]))


@dataclass
class SpiceRun:
    """One JVM run: `scores[entry image_id]`, and how many distinct captions it had and found in the parse cache."""

    scores: dict[str, PairScore]
    captions: int
    cached: int


class SpiceCaptionError(SpiceUnavailable):
    """SPICE failed on one caption (`caption`: the text SPICE was given)."""

    def __init__(self, caption: str, cause: str):
        super().__init__(cause)
        self.caption, self.cause = caption, cause


class SpiceOutOfMemory(SpiceUnavailable):
    """The JVM ran out of heap, or the parser did on sentences of `lengths` tokens (SPICE would score those as
    empty, so the run does not count)."""

    def __init__(self, heap: str, lengths: list[int]):
        super().__init__(f"SPICE ran out of memory (Java heap {heap})")
        self.heap, self.lengths = heap, lengths


def run_spice(entries: list[dict], corenlp: Path, options: SpiceOptions) -> SpiceRun:
    """Score `[{"image_id", "test", "refs"}]` in one JVM run."""
    java = require_java()
    command_classpath = classpath(corenlp)
    Path(options.parse_cache).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ase-spice-") as folder:
        source, target = Path(folder) / "in.json", Path(folder) / "out.json"
        source.write_text(json.dumps(entries), encoding="utf-8")
        command = [java, f"-Xmx{options.heap}", *(f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in FST_OPEN_PACKAGES),
                   "-cp", command_classpath, RUNNER_CLASS, str(source), str(target), "-cache", str(options.parse_cache),
                   "-threads", str(options.threads)]
        run = subprocess.run(command, capture_output=True, text=True, errors="replace")
        try:
            output = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # none, or cut short by a dying JVM
            output = {}
    # CoreNLP's parser catches its own OutOfMemoryError and goes on with an empty parse; it only logs the length.
    lengths = [int(n) for n in re.findall(r"Parsing of sentence ran out of memory \(length=(\d+)\)", run.stderr)]
    if lengths or (run.returncode != 0 and "OutOfMemoryError" in run.stderr + str(output.get("error"))):
        raise SpiceOutOfMemory(options.heap, lengths)
    if run.returncode == 3 and output.get("caption") is not None:
        raise SpiceCaptionError(output["caption"], output["error"])
    if run.returncode != 0 or "scores" not in output:
        cause = output.get("error") or run.stderr.strip()[-3000:] or "no output"
        raise SpiceUnavailable(f"SPICE failed (java exit {run.returncode}): {cause}")
    scores = {str(item["image_id"]): PairScore.from_json(item["scores"]) for item in output["scores"]}
    return SpiceRun(scores, int(output["captions"]), int(output["cached"]))


# --- SPICE-family scores ----------------------------------------------------------------------------------------


def spice_entries(predictions: dict[str, str], references: dict[str, list[str]]) -> list[dict]:
    """SPICE input: for image `i` (in `predictions` order) one entry `all|i` with all its references and one
    `ref<j>|i` per reference j alone."""
    entries = []
    for index, (image_id, caption) in enumerate(predictions.items()):
        entries.append({"image_id": f"all|{index}", "test": caption, "refs": list(references[image_id])})
        entries += [
            {"image_id": f"ref{j}|{index}", "test": caption, "refs": [reference]}
            for j, reference in enumerate(references[image_id])
        ]
    return entries


def aggregate_spice(scores: dict[str, PairScore], image_ids: list[str], pr_variant: str = "independent") -> dict:
    """SPICE-family corpus scores from per-pair statistics keyed `all|<id>` and `ref<j>|<id>`.

    - SPICE: mean over images of F against all references (images whose F is NaN are skipped, as SPICE's own
      macro average does).
    - SPICE-L: mean over images of the best F against a single reference.
    - Precision / Recall: mean over images of the best single-reference tuple precision / recall;
      `pr_variant="independent"` takes each maximum on its own, `"best_f"` takes both from the best-F reference
      (the first one on ties).
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

    # In the order `SPICE_METRICS` lists them: SPICE, SPICE-L, Precision, Recall.
    return dict(zip(SPICE_METRICS, (mean(spice), mean(spice_l), mean(precision), mean(recall)), strict=True))


def _whose(caption: str, predictions: dict[str, str], references: dict[str, list[str]], limit: int = 3) -> str:
    owners = [f"the prediction for image_id {image_id!r}" for image_id, text in predictions.items() if text == caption]
    owners += [f"reference {j} of image_id {image_id!r}" for image_id, refs in references.items()
               for j, text in enumerate(refs) if text == caption]
    shown = caption if len(caption) <= 80 else caption[:77] + "..."
    return f"{', '.join(owners[:limit]) or 'a caption'} ({shown!r})"


def spice_scores(
    predictions: dict[str, str],
    references: dict[str, list[str]],
    options: SpiceOptions | None = None,
    pr_variant: str = "independent",
) -> tuple[dict | None, str | None]:
    """`(scores, None)` with official SPICE, or `(None, reason)` when it cannot run or fails.

    The captions are scored as given: `score_predictions` passes them PTB-tokenized, as pycocoevalcap's
    `COCOEvalCap` feeds its `Spice`. A caption that SPICE cannot parse is named in the reason.
    """
    scores, reason = spice_scores_grouped(predictions, references, [list(predictions)], options, pr_variant)
    return (None, reason) if scores is None else (scores[0], None)


def spice_scores_grouped(
    predictions: dict[str, str],
    references: dict[str, list[str]],
    groups: list[list[str]],
    options: SpiceOptions | None = None,
    pr_variant: str = "independent",
) -> tuple[list[dict] | None, str | None]:
    """`spice_scores` of several corpora in one SPICE run (one JVM; each distinct caption parsed once): the
    corpus scores of each group of keys of `predictions`, in `groups`' order."""
    options = options or SpiceOptions()
    image_ids = list(predictions)
    try:
        corenlp = ensure_corenlp(options)
        run = run_spice(spice_entries(predictions, references), corenlp, options)
    except SpiceCaptionError as error:
        return None, f"SPICE failed on {_whose(error.caption, predictions, references)}: {error.cause}"
    except SpiceOutOfMemory as error:
        texts = list(dict.fromkeys([*predictions.values(), *(ref for refs in references.values() for ref in refs)]))
        blamed = [text for text in texts if len(text.split()) in error.lengths] or [max(texts, key=lambda t: len(t.split()))]
        which = " on" if error.lengths else "; its longest caption is"
        captions = "; ".join(f"{_whose(text, predictions, references)}, {len(text.split())} tokens" for text in blamed[:3])
        return None, (f"{error}{which} {captions}. Raise the heap with --spice-heap or {HEAP_ENV}, or parse with "
                      "fewer --spice-threads")
    except SpiceUnavailable as error:
        return None, str(error)
    except OSError as error:  # a cache or jar folder that cannot be written, a java that vanished
        return None, f"SPICE could not run: {error}"
    keyed = {}
    for key, score in run.scores.items():
        kind, index = key.split("|", 1)
        keyed[f"{kind}|{image_ids[int(index)]}"] = score
    return [aggregate_spice(keyed, group, pr_variant) for group in groups], None
