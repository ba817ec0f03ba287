"""Datasets: the built-in ones, a user's .npz or CIFAR-10 batches, splits and batches."""
