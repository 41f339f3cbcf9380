"""Benchmarks for StableIdentity: ``python -m bench`` prints a table and writes ``bench/results/<machine>.json``.

What is measured and why is in ``docs/benchmarks.md``; the reference training step
that our learner is compared with is in :mod:`bench.reference`.
"""
