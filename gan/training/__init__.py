"""Training: the Accelerate loop, checkpoints, EMA and the data stream."""
