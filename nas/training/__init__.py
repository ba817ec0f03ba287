"""Supernet training: sampling rules, the training loop, checkpoints, data-parallel gradients."""
