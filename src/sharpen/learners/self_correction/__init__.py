"""Multi-turn self-correction learners on `sharpen.episodes`: RISE (rise.py) and SCoRe (score.py)."""
