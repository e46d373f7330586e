"""Voice conversion: causal content features, speaker conditioning, chunk-wise decoder (issue 9)."""
