"""openended: crash-safe, distributable open-ended evolutionary search over agents."""

__version__ = "0.1.0"
