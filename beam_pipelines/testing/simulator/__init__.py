"""A local stand-in for the providers' usage APIs, deterministic per (admin key, day)."""
from beam_pipelines.testing.simulator.server import ProviderSimulator

__all__ = ["ProviderSimulator"]
