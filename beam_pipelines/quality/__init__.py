"""Data-quality suites (Great Expectations' suite format) evaluated on plain DataFrames."""
