"""Benchmarks: ``python -m psgd.bench round|compress``, JSON on stdout (and --out FILE)."""
