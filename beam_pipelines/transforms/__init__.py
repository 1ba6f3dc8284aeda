"""Beam transforms: thin wrappers that compose the plain-Python domain logic."""
