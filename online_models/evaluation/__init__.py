"""How good the scores were: measures on arrays of scores and outcomes, and batch baselines.

Pure numpy and scipy: ``crm-scorer backtest --report`` and ``benchmarks/quality.py`` judge
with the same code (one implementation of each measure).
"""
