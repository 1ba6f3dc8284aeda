"""BigQuery plumbing shared by the metastore, the warehouse and ``convergence provision``.

One client factory (honouring ``BIGQUERY_EMULATOR_HOST`` and ``BIGQUERY_LOCATION``), typed query
parameters built from the tables' JSON schemas, retries for the errors BigQuery documents as
transient for DML, and the static rules every SQL text sent from here must follow.
"""
