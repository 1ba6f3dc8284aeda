"""FOCUS 1.2 rows from our cost tables, and a first-party FOCUS 1.2 validator."""
