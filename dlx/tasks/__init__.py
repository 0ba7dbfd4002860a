"""Tasks: one per file. A task owns the model(s) and the loss math; the loop owns everything else."""
