"""Using a trained model: critiquing photos batch by batch within bounds (`captioning`) and drawing what the model
looks at (`visualize`)."""
