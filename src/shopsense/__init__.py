"""shopsense: recommendations and precision marketing from one retail event stream."""

__version__ = "0.1.0"
