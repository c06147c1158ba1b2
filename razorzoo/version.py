"""The razorzoo version, in a module of its own so that every layer can name it without importing the package root
(whose public API reaches every layer)."""

__version__ = "0.2.0"
