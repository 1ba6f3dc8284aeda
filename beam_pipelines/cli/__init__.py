"""The ``convergence`` command."""
