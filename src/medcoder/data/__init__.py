"""Data: records, readers, label spaces, synthetic notes."""
