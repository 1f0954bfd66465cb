"""Policy gradient: the learner (learner.py), group advantage estimators and sample
weightings (advantages.py), clipped-surrogate losses and their aggregations (losses.py)."""
