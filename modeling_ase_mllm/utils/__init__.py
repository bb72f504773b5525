"""Small facts the tools share and that belong to none of them: where ase-mllm keeps its cache (`cache`), near-miss
suggestions for a misspelt name (`suggestions`), folders written whole or not at all (`files`), the `--quantization`
schemes and what a quantised load kept in floating point (`quantization`)."""
