#!/usr/bin/env python3
"""Seconds per 100 PCCD-length critiques for the whole eleven-metric evaluation (`score_predictions`).

    python bench/metrics_cost.py [--images 100] [--refs 7] [--spice-threads N] [--spice-heap 4g]

The critiques are generated (3 sentences, 30-60 words each, PCCD's ~7 references per photo: 29,645 comments on
4,235 photos). Three runs in one process, one METEOR JVM (started and warmed up before the clock) shared by all:
- the seven pycocoevalcap metrics alone (`spice=False`);
- all eleven on an empty SPICE parse cache (a first evaluation: CoreNLP loads and parses every distinct caption);
- all eleven again (a re-evaluation: every parse comes from the cache);
- all eleven for another model's critiques of the same photos (only the new predictions are parsed).
Needs the CoreNLP 3.6.0 jars (SPICE_CORENLP_DIR, or the cache folder); never downloads.
"""

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modeling_ase_mllm.evaluation.metrics import score_predictions  # noqa: E402
from modeling_ase_mllm.evaluation.spice import SpiceOptions  # noqa: E402


SUBJECTS = ["the light", "the composition", "the subject", "the background", "the color palette", "the horizon",
            "the foreground", "the contrast", "the depth of field", "the framing", "the sky", "the shadows"]
VERDICTS = ["is soft and flattering", "feels a little busy", "works well with the mood", "is slightly tilted",
            "draws the eye to the left", "could be stronger", "is nicely balanced", "looks flat and gray",
            "is too bright on the right side", "gives the image a calm feeling", "competes with the main subject"]
ADVICE = ["I would crop tighter on the face", "try a lower angle next time", "a longer exposure would smooth the water",
          "lift the shadows a little", "straighten the frame before printing", "use a wider aperture to blur the wall",
          "wait for the golden hour for warmer tones", "remove the distracting sign in the corner",
          "add a reflector to fill the dark side", "step back to include more of the street"]


def critique(rng: random.Random) -> str:
    """Three or four sentences, 30-60 words: verdicts on two aspects, then advice."""
    while True:
        sentences = [f"{rng.choice(SUBJECTS)} {rng.choice(VERDICTS)} and {rng.choice(SUBJECTS)} {rng.choice(VERDICTS)}",
                     f"{rng.choice(SUBJECTS)} {rng.choice(VERDICTS)}", f"{rng.choice(ADVICE)}, and {rng.choice(ADVICE)}"]
        if rng.random() < 0.5:
            sentences.insert(2, f"{rng.choice(SUBJECTS)} {rng.choice(VERDICTS)} but {rng.choice(SUBJECTS)} "
                                f"{rng.choice(VERDICTS)}")
        text = " ".join(sentence[0].upper() + sentence[1:] + "." for sentence in sentences)
        if 30 <= len(text.split()) <= 60:
            return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--refs", type=int, default=7)
    parser.add_argument("--spice-threads", type=int)
    parser.add_argument("--spice-heap")
    args = parser.parse_args(argv)
    from pycocoevalcap.meteor.meteor import Meteor

    rng = random.Random(0)
    predictions = {f"img{i}": critique(rng) for i in range(args.images)}
    references = {image_id: [critique(rng) for _ in range(args.refs)] for image_id in predictions}
    other_model = {image_id: critique(rng) for image_id in predictions}
    meteor = Meteor()
    meteor.compute_score({"warm-up": ["a photo"]}, {"warm-up": ["a photo"]})  # METEOR loads its tables on first use
    per_100 = 100 / args.images
    with tempfile.TemporaryDirectory(prefix="bench-spice-") as cache:
        options = SpiceOptions(download=False, heap=args.spice_heap, threads=args.spice_threads, parse_cache=cache)
        timings = {}
        runs = (("seven pycocoevalcap metrics", predictions, False), ("eleven, empty parse cache", predictions, options),
                ("eleven, parse cache filled", predictions, options),
                ("eleven, another model (references cached)", other_model, options))
        for name, captions, spice in runs:
            started = time.perf_counter()
            metrics = score_predictions(captions, references, spice=spice, meteor=meteor)
            timings[name] = time.perf_counter() - started
            if spice and metrics["unavailable"]:
                raise SystemExit(f"SPICE did not run: {metrics['unavailable']['SPICE']}")
    print(f"{args.images} critiques x {args.refs} references, SPICE threads {options.threads}, "
          f"heap {options.heap}")
    print("| evaluation | seconds | seconds per 100 critiques |\n|---|---:|---:|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.1f} | {seconds * per_100:.1f} |")
    print(f"SPICE {metrics['SPICE']:.3f}, SPICE-L {metrics['SPICE-L']:.3f}, CIDEr {metrics['CIDEr']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
