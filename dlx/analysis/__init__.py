"""Looking inside trained networks and their uncertainty: the `dlx eval`, `predict`, `viz` and `active` commands.

Commands (each module has `main(argv) -> int`): evaluate (dlx eval), predict, viz (dispatches to cam, filters,
embed, eigen, gradflow, dream, invert, style, regress), active. Shared pieces: loading (run folders, outputs),
uncertainty (MC-dropout, entropy, mutual information, ECE), layers (forward hooks), plot and images (PIL
drawing; no matplotlib). Nothing here is imported by `dlx train`.
"""
