"""Training: the loop, the EMA of the weights, checkpoints and run directories."""
