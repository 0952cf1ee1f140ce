"""sofar-cost: exact cost accounting for binary CNNs."""
