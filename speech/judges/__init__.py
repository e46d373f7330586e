"""Judges (DESIGN.md section 4): models that measure ours and are never their training targets."""
