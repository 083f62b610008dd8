"""Training of the VAEs, the multiple-instance classifier and the CNN baseline (seeded, CPU or CUDA)."""
