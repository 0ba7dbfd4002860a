"""Loggers beyond the run folder's own records (conf/logger/): one per file. The run folder (TensorBoard,
metrics.jsonl, summary.json) is always written; a logger gets a copy (dlx.tracking.remote_logger)."""
