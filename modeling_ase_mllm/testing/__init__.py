"""Small, offline ASE-MLLM builds for the tests, the benches and the demo (`tiny.py`; the Qwen-VL-Chat family:
`tiny_qwen_vl.py`): nothing here downloads."""
