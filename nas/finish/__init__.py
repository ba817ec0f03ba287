"""Finishing a found subnet: training it further, and packaging it as a self-describing model folder."""
