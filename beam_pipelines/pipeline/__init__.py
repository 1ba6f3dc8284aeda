"""Compile a pipeline config into a Beam graph, and run it for a set of orgs."""
