"""Synthetic data, never training data for real use: the pelvic phantom case (:mod:`.phantom`) and a small
cohort of 2D node cross-sections for tests and the tiny bundle (:mod:`.nodules`)."""
