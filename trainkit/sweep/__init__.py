"""Hyperparameter search on Optuna, trials as ordinary runs: the sweep file and its
search space (`space`), the coordinator that runs trials (`coordinator`), and its
results (`results`).
"""
