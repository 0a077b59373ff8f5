"""The single place the deformrt version is defined (pyproject reads it from here)."""

__version__ = "0.1.0"
