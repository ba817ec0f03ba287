"""The finishing stage: the searched subnets trained further, and the model folder they are handed over in."""
