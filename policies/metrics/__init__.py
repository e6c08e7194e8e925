"""sfa-ops' own metric series: call counts and histograms, rollups, latency sketches,
and the alerting rules evaluated on the series.
"""
