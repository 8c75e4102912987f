"""Benchmarks for ctxdoctor. Not part of the installed package; see bench/README.md."""
