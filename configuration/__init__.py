"""Declarative presets (model configs, training recipes); installed as `modeling_ase_mllm._configuration`."""
