"""Small, offline ASE-MLLM builds for the tests, the benches and the demo (`tiny.py`): nothing here downloads."""
