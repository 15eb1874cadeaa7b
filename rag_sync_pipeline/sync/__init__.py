"""The four stages, each reconciling its table against its upstream. Knows nothing of Dagster.

Import from the modules (`sync.stages`, `sync.up_to_date`, ...): this package imports nothing, so a caller
that only asks whether a partition is up to date does not load the stage code.
"""
