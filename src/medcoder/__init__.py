"""medcoder: clinical text coding with transfer learning."""

__version__ = "0.1.0"
