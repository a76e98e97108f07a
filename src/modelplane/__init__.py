"""modelplane: host machine-learning models for many teams as one system."""

__version__ = "0.1.0"

__all__ = ["__version__"]
