"""What a Hub repository shows and receives: the model card (`model_card`) and publishing a folder (`publish`)."""
