"""The AIC datasets: one module per reader (`pccd`, `rpcd`, `dpc2022`, `ava_captions`, the bundled `mini_aic`), the
one schema they share (`schema`), their errors (`errors`) and file handling (`records`), the readers by name
(`registry`), training conversations (`conversations`), the prompts (`prompts`) and precomputed saliency maps
(`saliency`, with the weight fingerprints of `fingerprint`)."""
