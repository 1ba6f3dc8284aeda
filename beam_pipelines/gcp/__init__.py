"""Google Cloud billing export: reading it (BigQuery or a local Parquet twin) and flattening it."""
