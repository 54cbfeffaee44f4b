"""pursuhint: find where a student should learn from its teacher (PURSUhInT), and search around it."""

from .errors import PursuhintError

__version__ = "0.1.0"

__all__ = ["PursuhintError", "__version__"]
