"""Benchmarks (`make bench`): each case measures the project and a plain baseline in the same run."""
