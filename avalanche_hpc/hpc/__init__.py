"""Launching stages on SLURM (submitit), profiles, containers."""
