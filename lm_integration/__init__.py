"""PyTorch-side consumers of the n-gram engine. Imports neither numba nor grpc."""

from lm_integration.source import NgramSource

__all__ = ["NgramSource"]
