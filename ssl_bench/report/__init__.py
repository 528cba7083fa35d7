"""Comparison tables and plots from the tidy results frame."""
