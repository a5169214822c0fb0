"""Helpers shared by the test modules: corpora and indexes to build, oracles, comparisons."""
