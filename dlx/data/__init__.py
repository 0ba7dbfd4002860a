"""Data modules: one file per data set family; `base.TensorData` is the in-memory path (docs/architecture.md)."""
