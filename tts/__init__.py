"""Speech synthesis: text front end, chunk-aware flow-matching acoustic model, streaming vocoder (issue 8)."""
