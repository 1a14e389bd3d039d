"""medcoder's version: what every saved bundle records."""

__version__ = "0.2.0"
