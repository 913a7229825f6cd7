"""The keras_vid version, kept in one place for the package and pyproject."""

__version__ = "0.1.0"
