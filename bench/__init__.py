"""Measurements of the relay from the outside, each module runnable as a script."""
