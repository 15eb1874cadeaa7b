"""Dagster wiring: the asset, check and sensor factories, resources, jobs and the Definitions."""
