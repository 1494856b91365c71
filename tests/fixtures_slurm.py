"""Fixtures for the real single-node SLURM cluster (owned by the HPC stage)."""
