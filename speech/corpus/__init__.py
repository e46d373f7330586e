"""Training and evaluation corpora (issue 3): text, voices, real sets, alignments, augmentation, packing."""
