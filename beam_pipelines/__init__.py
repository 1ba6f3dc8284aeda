"""Convergence data pipeline: YAML pipeline configs compiled into Apache Beam graphs.

Modules the launcher imports (config, metastore, secrets, settings) never import apache_beam at
import time; only ``transforms`` and ``pipeline`` do.
"""
