"""seqmon: a streaming anomaly monitor for short structured string sequences."""

__version__ = "0.1.0"
