"""Benchmarks run by hand against a real database; not part of the test suite."""
