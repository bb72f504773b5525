"""Processor presets and dataset-preparation entry points; installed as `modeling_ase_mllm._processing`."""
