"""Where data rows land: the local Parquet warehouse (embedded default) or BigQuery."""
