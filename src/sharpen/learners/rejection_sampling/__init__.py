"""Rejection-sampling fine-tuning: the learner (learner.py) and the pure selections and
B-STaR statistics it uses (selection.py)."""
