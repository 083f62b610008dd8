"""Command-line front ends, one module per group of sub-commands."""
