"""Causal streaming Whisper (CarelessWhisper): weights import, block-causal encoder with a K/V cache, LoRA, decoding."""
