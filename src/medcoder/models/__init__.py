"""medcoder.models."""
