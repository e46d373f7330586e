"""Benchmarks (`speech bench ...`): each prints a table and writes JSON."""
