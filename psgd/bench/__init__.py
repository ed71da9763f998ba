"""Benchmarks: ``python -m psgd.bench round|compress``, JSON on stdout (--table: text) and --out FILE."""
