"""What every policy shares: loading policy YAML (shipped defaults in ``policies/*.yaml``,
an override directory) and the value conventions (durations, percentages).
"""
