"""Held-out evaluation: answering questions with free and forced readings (run), yes/no
classification metrics (classification) and score metrics with bootstrap intervals (scores)."""
