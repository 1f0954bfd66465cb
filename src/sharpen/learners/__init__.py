"""Training-time self-improvement: learners that turn scored rollouts into weight updates."""
