"""Thin command-line layer: each module parses options and delegates to a stage function."""
