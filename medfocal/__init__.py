"""medfocal: focal-family losses, models and tools for class-imbalanced medical imaging."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
