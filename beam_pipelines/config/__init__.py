"""Pipeline and system configs: strict pydantic models, YAML loading, schema files.

Nothing here imports apache_beam, and nothing is imported on package import: each module imports
alone (``config.loader`` uses the registry, which uses ``config.step_options``).
"""
