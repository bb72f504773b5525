"""ASE-MLLM inside other projects' tools: lmms-eval's model and tasks (`lmms_eval`)."""
