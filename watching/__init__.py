"""Watching places: cameras counted around the clock, their history and alerts."""
