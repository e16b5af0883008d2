"""asiarch: autonomous neural-architecture research campaigns on Ray."""

__version__ = "0.1.0"
