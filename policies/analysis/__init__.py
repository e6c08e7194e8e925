"""The batch analyses over stored history: baselines, summaries, recommendations.
"""
