"""ase-mllm: Aesthetic Image Captioning with Saliency Enhanced MLLMs, on Hugging Face Transformers."""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent

# torch is pinned exactly: the CPU wheel for 2.13.0 lies on disk, and any looser spec can pull a multi-GB
# CUDA build. Nothing may depend on torchvision (no build of it works with this torch).
CORE = [
    "torch==2.13.0",
    "transformers==5.23.0",
    "tokenizers>=0.22",
    "safetensors>=0.5",
    "huggingface-hub>=1.0",
    "accelerate>=1.10",
    "numpy>=1.26",
    "pillow>=10.0",
    "pyyaml>=6.0",
    "tqdm>=4.66",
    "datasets==5.2.0",  # readers, conversations and evaluation splits are `datasets` objects
]
TRAIN = ["trl==1.16.0", "peft==0.21.2"]
EVAL = ["pycocoevalcap==1.2", "evaluate==0.4.6"]
# `ase-mllm convert` reads SentencePiece `tokenizer.model` files: InternLM2's tokenizer (InternVL2-2B/8B/26B) and
# Llama/Phi-3 folders that ship no tokenizer.json. The converted folder needs neither (it holds a tokenizer.json).
CONVERT = ["sentencepiece>=0.2", "protobuf>=4"]
# `ase-mllm serve` runs on transformers' own OpenAI-compatible server: its `serving` extra (FastAPI, uvicorn, openai).
SERVE = ["transformers[serving]"]
# The lmms-eval plugin (model `ase_mllm`, AIC caption tasks). lmms-eval needs torchvision: PyPI's build that pairs
# with our torch, kept out of every other extra.
LMMS = ["lmms-eval>=0.7.3,<0.8", "torchvision==0.28.0", "filelock<4"]
# The web demo (examples/app.py) runs on Gradio; the demo itself trains and scores a small model.
DEMO = sorted(set(TRAIN + EVAL + ["scikit-image>=0.24", "gradio>=6.0,<7"]))
# selenium drives Debian's chromium/chromium-driver (installed by .ci/run) in the web-demo test.
# DeepSpeed ZeRO-3 is tested on the CPU (tests/test_fsdp.py). It comes as a source package whose build needs only
# setuptools (no torch: its ops compile on first use), so it brings no other torch.
DEEPSPEED = ["deepspeed>=0.19.8,<0.20"]
DEV = sorted(set(DEMO + CONVERT + SERVE + LMMS + DEEPSPEED + ["pytest>=8", "pytest-timeout>=2.3", "selenium>=4.20"]))

setup(
    name="ase-mllm",
    version="0.1.0",
    description="ASE-MLLM (arXiv 2509.04378): InternVL2 with aesthetic saliency, Hugging Face native.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # The presets live in top-level folders of the repository but install *inside* our package, so no
    # top-level package named `configuration` or `processing` is ever installed.
    packages=["modeling_ase_mllm", "modeling_ase_mllm._configuration", "modeling_ase_mllm._processing",
              "modeling_ase_mllm.lmms_eval_plugin", "modeling_ase_mllm.lmms_eval_plugin.tasks"],
    package_dir={
        "modeling_ase_mllm._configuration": "configuration",
        "modeling_ase_mllm._processing": "processing",
    },
    package_data={
        "modeling_ase_mllm": ["data/*.json", "java/edu/anu/spice/*.java", "evaluate_metric/aic_metrics/*.py"],
        "modeling_ase_mllm._configuration": ["**/*.json", "**/*.yaml"],
        "modeling_ase_mllm._processing": ["**/*.json", "**/*.jinja", "**/*.yaml"],
        "modeling_ase_mllm.lmms_eval_plugin.tasks": ["*.yaml", "_default_template_yaml"],
    },
    install_requires=CORE,
    extras_require={"train": TRAIN, "eval": EVAL, "convert": CONVERT, "demo": DEMO, "serve": SERVE, "lmms": LMMS,
                    "dev": DEV},
    entry_points={"console_scripts": ["ase-mllm=modeling_ase_mllm.cli:main"],
                  "lmms_eval.models": ["ase_mllm=modeling_ase_mllm.lmms_eval_plugin:manifest"]},
)
