"""Training data: the LIDC adapter, a synthetic cohort for tests, and patient bags for the MIL classifier."""
