"""Exceptions raised by the data package."""

from __future__ import annotations


class DataError(ValueError):
    """Invalid data: a corrupt or truncated file, a wrong layout or a label outside the tree."""


class HierarchyError(DataError):
    """A label hierarchy that is not a tree, or labels that do not fit the hierarchy."""


class DataNotFoundError(DataError, FileNotFoundError):
    """Dataset files that are missing from every searched location."""
