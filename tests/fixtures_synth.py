"""Fixtures that build synthetic studies (owned by the synth stage)."""
