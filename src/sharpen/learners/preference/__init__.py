"""Iterative preference learning: the learner (learner.py), DPO-family losses (losses.py)
and the pair builders that turn a scored group into preferences (pairs.py)."""
