"""The toolkit's version, in the bottom layer so every module may record it."""
__version__ = "0.2.0"
