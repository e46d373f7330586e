"""Speech recognition: cache-aware FastConformer (CTC/RNNT) and LoRA-causalised Whisper (issues 4 and 5)."""
