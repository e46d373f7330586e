"""The product surface: CLI, server and protocol, sessions, audio I/O, benchmarks (DESIGN.md section 2)."""

__version__ = "0.1.0"
