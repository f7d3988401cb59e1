"""Training: one configuration (``engine.config``), the training loop, prediction and checkpoints."""
