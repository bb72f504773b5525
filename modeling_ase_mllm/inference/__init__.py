"""Using a trained model: reading photos within bounds (`photos`), critiquing them batch by batch (`captioning`),
drawing what the model looks at (`visualize`), and serving critiques over HTTP (`serving`, with `serving_limits`,
`chat_requests`, `image_urls` and `gate`)."""
