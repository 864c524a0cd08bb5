"""minipool: a teaching toolkit for distributed computing, on the standard library."""
__version__ = "0.1.0"
