"""`python -m mvs.batch`: reconstruct many sequences, one Ray task per scene (see README)."""
