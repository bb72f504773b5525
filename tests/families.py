"""The two model families (InternVL2 and Qwen-VL-Chat, paper Table III) as one test sees them, so that a behaviour
both families share is one test parametrised over the `family` fixture (conftest.py) instead of a copy per family.

A `Family` holds the tiny model's builder and the facts a shared test expects of the family; the `family` fixture
binds the session's tiny processor and tokenizer to it.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from modeling_ase_mllm import AUTO_MAP, QWEN_VL_AUTO_MAP
from modeling_ase_mllm.testing.tiny import build_tiny_model, tiny_config
from modeling_ase_mllm.testing.tiny_qwen_vl import build_tiny_qwen_vl_model, tiny_qwen_vl_config


# The photo the shared tests show a model (height, width): wide enough that InternVL tiles it.
PHOTO_SIZE = (300, 700)


@dataclass(frozen=True)
class Family:
    """One family: `make_model(gate=, seed=, **overrides)` builds its random tiny model (overrides: top-level config
    fields), `processor` and `tokenizer` are its tiny ones (bound by the `family` fixture)."""

    name: str
    build: Callable  # (config, seed=, gate=) -> model
    config: Callable  # (**overrides) -> the tiny config
    auto_map: dict[str, str]  # what a saved folder's config.json declares
    vision_layers_attribute: str  # the vision encoder's list of blocks
    photo_map_shape: tuple[int, int, int]  # the saliency maps (one per picture the ViT sees) of a PHOTO_SIZE photo
    paper_recipe: str  # the bundled Table II/III "FT + IASC" recipe on PCCD
    processor_fixture: str
    tokenizer_fixture: str
    processor: Any = None
    tokenizer: Any = None

    def make_model(self, gate: float | None = 0.0, seed: int = 0, **overrides):
        return self.build(self.config(**overrides), seed=seed, gate=gate)

    def vision_layers(self, model) -> list:
        """The ViT blocks (IAS or not) of `model`, in order."""
        return getattr(model.model.vision_tower.encoder, self.vision_layers_attribute)

    @property
    def classes(self) -> dict[str, str]:
        """Auto class -> the name of the class `auto_map` gives it."""
        return {auto: target.rsplit(".", 1)[1] for auto, target in self.auto_map.items()}

    def bind(self, processor, tokenizer) -> "Family":
        return replace(self, processor=processor, tokenizer=tokenizer)


FAMILIES = {
    family.name: family
    for family in (
        Family("internvl", build=build_tiny_model, config=tiny_config, auto_map=AUTO_MAP,
               vision_layers_attribute="layer",
               photo_map_shape=(11, 32, 32),  # 5×2 tiles and the thumbnail, each on the 32×32 grid of 14 px patches
               paper_recipe="pccd", processor_fixture="processor", tokenizer_fixture="tokenizer"),
        Family("qwen_vl", build=build_tiny_qwen_vl_model, config=tiny_qwen_vl_config, auto_map=QWEN_VL_AUTO_MAP,
               vision_layers_attribute="layers", photo_map_shape=(1, 32, 32),  # its one 448 px picture
               paper_recipe="qwen-vl-pccd", processor_fixture="qwen_vl_processor",
               tokenizer_fixture="qwen_vl_tokenizer"),
    )
}
