"""Test and demo support shipped with the package: the provider simulator and fixtures."""
