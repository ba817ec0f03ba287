"""Evaluating a subnet: inherited accuracy, its costs and the hard limits."""
