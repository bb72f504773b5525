"""Write the picture of what ASE-MLLM looks at for a real photo: the photo with its EAT + LayerCAM saliency
overlaid, beside the 448 px tile grid with each tile's map (and the thumbnail's).

    python examples/saliency_picture.py [--model PATH_OR_HUB_ID] [--eat EAT.safetensors] [--out astronaut_saliency.png]

Without `--model` it builds the tiny random test model (the machinery, not a trained EAT); `--eat` loads EAT
weights (the released AVA checkpoint, converted with `ase-mllm convert-eat`) into the model's saliency module.
The photo is scikit-image's astronaut (public domain, shipped offline with scikit-image).
"""

import argparse

from PIL import Image
from skimage import data

from modeling_ase_mllm.inference.captioning import load_model_and_processor
from modeling_ase_mllm.convert.eat import load_eat_weights
from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model
from modeling_ase_mllm.inference.visualize import save_saliency_picture


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="an ASE-MLLM folder or Hub id (default: the tiny random model)")
    parser.add_argument("--eat", help="EAT weights (.safetensors or .pth) to load into the model's saliency module")
    parser.add_argument("--max-tiles", type=int, default=6)
    parser.add_argument("--out", default="astronaut_saliency.png")
    args = parser.parse_args(argv)
    if args.model:
        model, processor = load_model_and_processor(args.model)
    else:
        model, processor = build_tiny_model(), build_processor()
    if args.eat:
        load_eat_weights(model, args.eat)
    photo = Image.fromarray(data.astronaut())
    print(save_saliency_picture(photo, args.out, processor, model, args.max_tiles))


if __name__ == "__main__":
    main()
