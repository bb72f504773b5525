"""Official SPICE on Stanford CoreNLP 3.6.0: equal to pycocoevalcap's own `Spice`, SPICE-L/P/R against hand-worked
tuples, the parse cache under two concurrent runs, the jar download against a server on 127.0.0.1, Java-side
failures that keep the seven other metrics, and eleven numbers in every output.

The tests need the two CoreNLP jars (SPICE_CORENLP_DIR; .ci/system-packages fetches them with Maven into the cache folder) and,
for the reference runs of pycocoevalcap's `Spice` on Java 17, a standalone Nashorn (SPICE_NASHORN_DIR, also fetched
by .ci/system-packages). Without a variable they look in the cache folder, and are skipped, saying what to fetch, when the jars
are not there; with a variable set and its jars missing they fail.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modeling_ase_mllm.evaluation.metrics import (
    format_table_row, score_predictions, score_predictions_file, score_with_control,
)
from modeling_ase_mllm.evaluation.vocabulary import METRICS
from modeling_ase_mllm.evaluation.spice import (
    CORENLP_JARS, FST_OPEN_PACKAGES, SpiceOptions, SpiceUnavailable, cache_root, ensure_corenlp, run_spice,
    spice_directory, spice_entries, spice_scores,
)
from modeling_ase_mllm.utils.files import sha256_of
from spice_fixtures import HAND, HAND_SCORES, PCCD, SETS


# Where .ci/system-packages puts the jars; read before this module points XDG_CACHE_HOME at a folder of its own.
FETCHED = cache_root()


def _jars_from(variable: str, default: Path, patterns: list[str], what: str) -> Path:
    """The folder named by `variable`, else `default` if it holds the jars; a skip saying what to fetch, else."""
    folder = os.environ.get(variable)
    if folder is None:
        if all(list(default.glob(pattern)) for pattern in patterns):
            return default
        pytest.skip(f"{what}: run `bash .ci/system-packages test` or set {variable} to a folder "
                    f"holding {', '.join(patterns)}")
    missing = [pattern for pattern in patterns if not list(Path(folder).glob(pattern))]
    if missing:
        pytest.fail(f"{variable}={folder} lacks {', '.join(missing)}")
    return Path(folder)


@pytest.fixture(scope="session")
def corenlp_dir() -> Path:
    return _jars_from("SPICE_CORENLP_DIR", FETCHED, [jar.name for jar in CORENLP_JARS],
                      "official SPICE needs CoreNLP 3.6.0")


@pytest.fixture(scope="session")
def nashorn_dir() -> Path:
    return _jars_from("SPICE_NASHORN_DIR", FETCHED / "nashorn", ["nashorn-core-15.*.jar", "asm-*.jar"],
                      "pycocoevalcap's own Spice needs Nashorn on Java 17")


@pytest.fixture(scope="module", autouse=True)
def spice_home(tmp_path_factory):
    """One cache folder for the module: the compiled runner and SPICE's parse cache, reused by every test here."""
    home = tmp_path_factory.mktemp("xdg")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def options(corenlp_dir) -> SpiceOptions:
    return SpiceOptions(corenlp_dir=corenlp_dir, download=False)


# --- the reference: pycocoevalcap's Spice, unmodified ---------------------------------------------------------

ORACLE = """
import json, sys
from pycocoevalcap.spice import spice
runs = json.load(open(sys.argv[1]))
results = [spice.Spice().compute_score(gts, res) for gts, res in runs]
json.dump({"module": spice.__file__, "runs": [[average, [s["All"] for s in scores]] for average, scores in results]},
          open(sys.argv[2], "w"))
"""


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, corenlp_dir, nashorn_dir):
    """`oracle([(gts, res), ...])` → `[(average, [per-image All])]` from `pycocoevalcap.spice.spice.Spice`.

    The package's files are linked, not copied or edited, into a folder that shadows the installed package, with the
    CoreNLP jars in `spice/lib/` where `get_stanford_models` and the jar's manifest look for them. `spice-1.0.jar`
    itself is a hard link (or copy): the JVM resolves its manifest's `lib/...` class path from the jar's real place.
    Nashorn (for the jar's JSON pretty-printing) and the packages FST needs open go in through JDK_JAVA_OPTIONS.
    """
    installed = spice_directory()
    root = tmp_path_factory.mktemp("pycocoevalcap-linked")
    spice = root / "pycocoevalcap" / "spice"
    (spice / "lib").mkdir(parents=True)
    for name in ("__init__.py", "spice.py", "get_stanford_models.py"):
        (spice / name).symlink_to(installed / name)
    try:
        os.link(installed / "spice-1.0.jar", spice / "spice-1.0.jar")
    except OSError:
        shutil.copy2(installed / "spice-1.0.jar", spice / "spice-1.0.jar")
    for jar in [*(installed / "lib").glob("*.jar"), *(corenlp_dir / jar.name for jar in CORENLP_JARS)]:
        (spice / "lib" / jar.name).symlink_to(jar.resolve())
    module_path = os.pathsep.join(str(jar) for jar in sorted(nashorn_dir.glob("*.jar")))
    java_options = " ".join([f"--module-path {module_path} --add-modules org.openjdk.nashorn",
                             *(f"--add-opens java.base/{package}=ALL-UNNAMED" for package in FST_OPEN_PACKAGES)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "JDK_JAVA_OPTIONS": java_options}

    def run(runs):
        source, target = root / "runs.json", root / "results.json"
        source.write_text(json.dumps(runs))
        done = subprocess.run([sys.executable, "-c", ORACLE, str(source), str(target)], cwd=root, env=env,
                              capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stderr[-4000:]
        results = json.loads(target.read_text())
        assert Path(results["module"]).parent == spice and Path(results["module"]).samefile(installed / "spice.py")
        return results["runs"]

    return run


def ptb(references, predictions):
    """pycocoevalcap's PTB tokenizer, called directly, as COCOEvalCap tokenizes before every scorer."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
    res = tokenizer.tokenize({k: [{"caption": c}] for k, c in predictions.items()})
    return gts, res


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SETS))
def test_spice_equals_pycocoevalcap_spice(name, options, oracle, meteor):
    """SPICE equals `Spice().compute_score` on the COCOEvalCap-tokenized captions; SPICE-L, Precision and Recall
    equal the same scorer run on each (candidate, single reference) pair, maxed per image as the rules say."""
    predictions, references = SETS[name]
    gts, res = ptb(references, predictions)
    pairs = {f"{image_id}#{j}": image_id for image_id in gts for j in range(len(gts[image_id]))}
    single = ({key: [gts[image_id][int(key.split("#")[1])]] for key, image_id in pairs.items()},
              {key: res[image_id] for key, image_id in pairs.items()})
    (spice_average, _), (_, pair_scores) = oracle([(gts, res), single])

    by_image = {}
    for key, score in zip(sorted(pairs), pair_scores):  # compute_score returns images in sorted-id order
        by_image.setdefault(pairs[key], []).append(score)
    best = {image_id: max(scores, key=lambda s: s["f"]) for image_id, scores in by_image.items()}
    expected = {
        "SPICE": spice_average,
        "SPICE-L": sum(b["f"] for b in best.values()) / len(best),
        "independent": {"Precision": sum(max(s["pr"] for s in v) for v in by_image.values()) / len(by_image),
                        "Recall": sum(max(s["re"] for s in v) for v in by_image.values()) / len(by_image)},
        "best_f": {"Precision": sum(b["pr"] for b in best.values()) / len(best),
                   "Recall": sum(b["re"] for b in best.values()) / len(best)},
    }

    ours = score_predictions(predictions, references, "independent", options, meteor)
    assert ours["spice_backend"] == "official" and not ours["unavailable"]
    assert ours["SPICE"] == pytest.approx(expected["SPICE"], abs=1e-6)
    assert ours["SPICE-L"] == pytest.approx(expected["SPICE-L"], abs=1e-6)
    for key in ("Precision", "Recall"):
        assert ours[key] == pytest.approx(expected["independent"][key], abs=1e-6), key
    best_f, reason = spice_scores({k: res[k][0] for k in res}, gts, options, "best_f")
    assert reason is None and best_f["SPICE-L"] == pytest.approx(expected["SPICE-L"], abs=1e-6)
    for key in ("Precision", "Recall"):
        assert best_f[key] == pytest.approx(expected["best_f"][key], abs=1e-6), key
    assert 0 < ours["SPICE"] < 1


@pytest.mark.slow
@pytest.mark.parametrize("pr_variant", ["independent", "best_f"])
def test_spice_family_equals_hand_worked_tuples(pr_variant, options, meteor):
    ours = score_predictions(*HAND, pr_variant, options, meteor)
    assert ours["SPICE"] == pytest.approx(HAND_SCORES["SPICE"], abs=1e-12)
    assert ours["SPICE-L"] == pytest.approx(HAND_SCORES["SPICE-L"], abs=1e-12)
    for key, value in HAND_SCORES[pr_variant].items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key
    assert ours["pr_variant"] == pr_variant


@pytest.mark.slow
def test_the_grounding_control_scores_both_pairings_in_one_spice_run(options, meteor):
    """`--control shuffled` runs SPICE once for the true and the shuffled pairings: the true numbers stay the hand-worked
    ones, the shuffled ones equal a run of their own."""
    predictions, references = HAND
    ours = score_with_control(predictions, references, "shuffled", 0, spice=options, meteor=meteor)
    assert ours["SPICE"] == pytest.approx(HAND_SCORES["SPICE"], abs=1e-12)
    assert ours["SPICE-L"] == pytest.approx(HAND_SCORES["SPICE-L"], abs=1e-12)
    moved = {"x": predictions["y"], "y": predictions["x"]}  # the one derangement of two photos
    alone = score_predictions(moved, references, "independent", options, meteor)
    assert ours["control"]["metrics"] == {key: pytest.approx(alone[key], abs=1e-12) for key in METRICS}
    assert ours["control"]["gap"]["SPICE"] == pytest.approx(ours["SPICE"] - alone["SPICE"], abs=1e-12)


# --- the parse cache ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_concurrent_evaluations_share_one_parse_cache(tmp_path, corenlp_dir, options):
    """Two evaluations start at once on an empty cache (both parse, both write); both give the scores of a run with
    its own cache, and a third run then finds every caption in the shared cache."""
    predictions, references = HAND
    shared = SpiceOptions(corenlp_dir=corenlp_dir, download=False, parse_cache=tmp_path / "parses")
    spans = []

    def evaluate(_):
        started = time.monotonic()
        result = spice_scores(predictions, references, shared)
        spans.append((started, time.monotonic()))
        return result

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(evaluate, range(2))
    (a_start, a_end), (b_start, b_end) = spans
    assert a_start < b_end and b_start < a_end  # the two JVMs did run at the same time
    alone = spice_scores(predictions, references, options)
    assert first == second == alone and alone[1] is None
    assert alone[0]["SPICE-L"] == pytest.approx(HAND_SCORES["SPICE-L"], abs=1e-12)

    run = run_spice(spice_entries(predictions, references), corenlp_dir, shared)
    distinct = {*predictions.values(), *(r for refs in references.values() for r in refs)}
    assert run.captions == len(distinct) and run.cached == run.captions


# --- the jar download -------------------------------------------------------------------------------------------


class JarServer:
    """Maven Central's layout on 127.0.0.1, serving the real jars' bytes, with HTTP Range; `cut_after` ends each
    response after that many bytes (an interrupted transfer), `corrupt` flips one byte in the middle."""

    def __init__(self, corenlp_dir: Path):
        self.files = {f"/maven2/{jar.url('').lstrip('/')}": corenlp_dir / jar.name for jar in CORENLP_JARS}
        self.requests, self.sent, self.cut_after, self.corrupt = [], 0, None, False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = server.files.get(self.path)
                if path is None:
                    self.send_error(404)
                    return
                size, start = path.stat().st_size, 0
                ranged = self.headers.get("Range")
                server.requests.append((path.name, ranged))
                if ranged:
                    start = int(re.fullmatch(r"bytes=(\d+)-", ranged).group(1))
                self.send_response(206 if ranged else 200)
                self.send_header("Content-Length", str(size - start))
                if ranged:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.end_headers()
                limit = size - start if server.cut_after is None else min(server.cut_after, size - start)
                with path.open("rb") as file:
                    file.seek(start)
                    data = bytearray(file.read(limit))
                middle = size // 2 - start
                if server.corrupt and 0 <= middle < len(data):
                    data[middle] ^= 0xFF
                self.wfile.write(data)
                server.sent += len(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/maven2"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(corenlp_dir):
    served = JarServer(corenlp_dir)
    yield served
    served.close()


SMALL, MODELS = CORENLP_JARS


def test_pinned_checksums_are_those_of_maven_centrals_jars(corenlp_dir):
    for jar in CORENLP_JARS:
        assert (corenlp_dir / jar.name).stat().st_size == jar.size
        assert sha256_of(corenlp_dir / jar.name) == jar.sha256


def test_first_use_downloads_both_jars_into_the_cache_verified_once(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("SPICE_MAVEN_REPOSITORY", server.url)
    monkeypatch.delenv("SPICE_CORENLP_DIR", raising=False)
    monkeypatch.delenv("SPICE_NO_DOWNLOAD")
    folder = ensure_corenlp(SpiceOptions())
    assert folder == tmp_path / "ase_mllm" / "spice" == cache_root()
    for jar in CORENLP_JARS:
        assert sha256_of(folder / jar.name) == jar.sha256
    assert sorted(server.requests) == sorted((jar.name, None) for jar in CORENLP_JARS)
    assert not list(folder.glob("*.part"))
    progress = capsys.readouterr().err
    assert MODELS.name in progress and "100%" in progress  # the progress bar
    assert ensure_corenlp(SpiceOptions()) == folder and len(server.requests) == 2  # cached: nothing fetched again


def _folder_lacking_the_small_jar(tmp_path: Path, corenlp_dir: Path) -> Path:
    folder = tmp_path / "corenlp"
    folder.mkdir()
    (folder / MODELS.name).symlink_to(corenlp_dir / MODELS.name)
    return folder


def test_corrupt_download_is_rejected_and_removed(server, tmp_path, corenlp_dir):
    folder = _folder_lacking_the_small_jar(tmp_path, corenlp_dir)
    server.corrupt = True
    with pytest.raises(SpiceUnavailable) as error:
        ensure_corenlp(SpiceOptions(corenlp_dir=folder, download=True, repository=server.url))
    message = str(error.value)
    assert "corrupt" in message and SMALL.url(server.url) in message and SMALL.sha256 in message
    assert not (folder / SMALL.name).exists() and not (folder / f"{SMALL.name}.part").exists()


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path, corenlp_dir):
    folder = _folder_lacking_the_small_jar(tmp_path, corenlp_dir)
    server.cut_after = 1 << 20  # every response stops after 1 MiB: five attempts get 5 MiB of the 6.9 MiB
    with pytest.raises(SpiceUnavailable) as error:
        ensure_corenlp(SpiceOptions(corenlp_dir=folder, download=True, repository=server.url))
    assert "the next run resumes" in str(error.value) and not (folder / SMALL.name).exists()
    part = folder / f"{SMALL.name}.part"
    assert part.stat().st_size == 5 << 20
    assert server.requests == [(SMALL.name, None)] + [(SMALL.name, f"bytes={n << 20}-") for n in range(1, 5)]

    server.cut_after, server.sent = None, 0
    ensure_corenlp(SpiceOptions(corenlp_dir=folder, download=True, repository=server.url))
    assert server.requests[-1] == (SMALL.name, f"bytes={5 << 20}-") and server.sent == SMALL.size - (5 << 20)
    assert sha256_of(folder / SMALL.name) == SMALL.sha256 and not part.exists()


def test_no_download_variable_forbids_fetching(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SPICE_NO_DOWNLOAD", "1")
    with pytest.raises(SpiceUnavailable, match="downloads are off"):
        ensure_corenlp(SpiceOptions(corenlp_dir=tmp_path, repository=server.url))
    assert server.requests == [] and list(tmp_path.iterdir()) == []
    monkeypatch.setenv("SPICE_NO_DOWNLOAD", "0")
    assert SpiceOptions().download is True


def test_without_a_server_the_error_names_files_urls_checksums_folder_and_variable(tmp_path):
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        repository = f"http://127.0.0.1:{probe.getsockname()[1]}/maven2"
    options = SpiceOptions(corenlp_dir=tmp_path / "corenlp", download=True, repository=repository)
    scores, reason = spice_scores(*HAND, options)
    assert scores is None
    for jar in CORENLP_JARS:
        assert jar.name in reason and jar.url(repository) in reason and jar.sha256 in reason
    assert str(tmp_path / "corenlp") in reason and "SPICE_CORENLP_DIR" in reason and "refused" in reason.lower()


# --- failures of the Java side keep the seven other metrics ----------------------------------------------------


def _score_files(tmp_path: Path, predictions: dict, references: dict, options, meteor):
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps({"image_id": k, "caption": v}) + "\n" for k, v in predictions.items()))
    written = path.read_bytes()
    (tmp_path / "references.json").write_text(json.dumps(references))
    metrics = score_predictions_file(path, tmp_path / "references.json", tmp_path / "out", spice=options,
                                     meteor=meteor)
    assert path.read_bytes() == written  # no prediction lost
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved == metrics and all(isinstance(saved[key], float) for key in METRICS[:7])
    assert all(saved[key] is None for key in METRICS[7:])
    return saved["unavailable"]["SPICE"]


def test_without_javac_spice_is_unavailable_and_the_seven_stay(tmp_path, monkeypatch, options, meteor):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(shutil.which("java"))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh"))  # the runner is not compiled yet
    reason = _score_files(tmp_path, *HAND, options, meteor)
    assert "`javac` not found" in reason and "default-jdk-headless" in reason


@pytest.mark.slow
def test_out_of_memory_names_the_heap_and_the_longest_caption(tmp_path, corenlp_dir, meteor):
    predictions = {"short": "a dog on a sofa", "long": PCCD[0]["portrait"]}
    references = {"short": ["a dog"], "long": ["a lovely portrait in window light"]}
    starved = SpiceOptions(corenlp_dir=corenlp_dir, download=False, heap="256m", parse_cache=tmp_path / "parses")
    reason = _score_files(tmp_path, predictions, references, starved, meteor)
    assert "SPICE ran out of memory (Java heap 256m)" in reason and "--spice-heap" in reason
    assert "; its longest caption is the prediction for image_id 'long' ('the soft window light" in reason


def test_a_crash_of_the_jvm_names_its_cause_and_the_seven_stay(tmp_path, corenlp_dir, meteor):
    folder = tmp_path / "corenlp"
    folder.mkdir()
    (folder / SMALL.name).symlink_to(corenlp_dir / SMALL.name)
    (folder / MODELS.name).write_bytes(b"not a jar")  # present, so used as is, and CoreNLP cannot load its models
    broken = SpiceOptions(corenlp_dir=folder, download=False, parse_cache=tmp_path / "parses")
    reason = _score_files(tmp_path, *HAND, broken, meteor)
    assert reason.startswith("SPICE failed (java exit") and "englishPCFG" in reason


# --- eleven numbers everywhere -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_eleven_numbers_in_metrics_files_model_card_evaluate_module_and_cli(tmp_path, monkeypatch, corenlp_dir, options,
                                                                            meteor):
    import evaluate

    from modeling_ase_mllm.evaluation.metrics import EVALUATE_MODULE_PATH
    from modeling_ase_mllm.hub.model_card import write_model_card
    from modeling_ase_mllm.testing.tiny import tiny_config

    predictions, references = HAND
    (tmp_path / "predictions.jsonl").write_text(
        "".join(json.dumps({"image_id": k, "caption": v}) + "\n" for k, v in predictions.items()))
    (tmp_path / "references.json").write_text(json.dumps(references))
    metrics = score_predictions_file(tmp_path / "predictions.jsonl", tmp_path / "references.json", tmp_path / "out",
                                     spice=options, meteor=meteor)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert all(isinstance(saved[key], float) for key in METRICS) and saved["unavailable"] == {}
    row = format_table_row(saved)
    assert row.count("|") == 12 and "n/a" not in row
    assert row in (tmp_path / "out" / "metrics.md").read_text()

    card = write_model_card(tmp_path / "out", config=tiny_config())  # reads out/metrics.json
    assert row in card.read_text()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    module = evaluate.load(EVALUATE_MODULE_PATH)
    ids = list(predictions)
    computed = module.compute(predictions=[predictions[i] for i in ids], references=[references[i] for i in ids],
                              spice_corenlp_dir=str(corenlp_dir), download=False)
    for key in METRICS:
        assert computed[key] == pytest.approx(metrics[key], abs=1e-12), key

    cli = subprocess.run(
        [sys.executable, "-m", "modeling_ase_mllm.cli", "evaluate", "--predictions", str(tmp_path / "predictions.jsonl"),
         "--references", str(tmp_path / "references.json"), "--output-dir", str(tmp_path / "cli"),
         "--spice-corenlp-dir", str(corenlp_dir), "--no-download"],
        capture_output=True, text=True, timeout=900,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert row in cli.stdout
