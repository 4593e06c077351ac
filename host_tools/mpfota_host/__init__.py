"""Host-side tools for mpfota (CPython)."""

__version__ = "0.1.0"
