"""Fine-tuning, the TRL way: recipes parsed by `TrlParser` into `SFTConfig` + our script arguments (`recipes`,
`arguments`), TRL's collator plus precomputed saliency (`collator`), which weights train (`freezing`), and the run
itself (`train`)."""
