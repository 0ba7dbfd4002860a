"""Losses by family: classification, reconstruction, gan, regression; each a module with explicit arguments."""
