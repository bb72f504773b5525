"""Processor and chat-template presets (JSON, Jinja); installed as `modeling_ase_mllm._processing`.

None is needed yet: the processor's defaults are InternVL2's (448 px tiles, up to 12, ImageNet statistics, EAT +
LayerCAM saliency), its chat templates are built from OpenGVLab's conversation templates by
`processing_ase_mllm.build_chat_template` (remote code, so that a Hub folder carries them), and `ase-mllm convert`
takes the template from the source checkpoint. A new base family's processor settings go here, found with
`modeling_ase_mllm.presets.preset_root("processing")`.
"""
