"""Is the saliency faithful? Perturbation and randomisation metrics of saliency maps over EAT, and the report.

- `sources`: what is scored: LayerCAM at each candidate layer of EAT, and the controls (random map, centre
  Gaussian, spectral residual);
- `metrics`: deletion/insertion AUC, ROAD (pytorch-grad-cam's), the cascading model-randomisation check, the
  pointing game and bootstrap intervals;
- `loading`: EAT alone from a model folder, a Hub id or a checkpoint (never the language model);
- `report`: the resumable run over photos and its Markdown, JSON and PNG outputs (`ase-mllm saliency-report`).

Needs the `report` extra (pytorch-grad-cam, scipy, scikit-image, matplotlib); the CLI imports this package only in
its `main`.
"""
