"""Benchmarks for ctxdoctor (issue 6). Not part of the installed package; see bench/README.md."""
