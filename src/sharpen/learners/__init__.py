"""Training-time self-improvement: learners that turn scored rollouts into weight updates.

One folder per learner family, each showing its parts; what families share sits at the top:

    base.py                 the learner protocol, LearnerContext, StepOutput, the guarded optimizer step
    sft.py                  weighted SFT (`fine_tune`): the update of rejection sampling and RISE
    policy_gradient/        learner.py (PolicyGradient), advantages.py (estimators and sample
                            weightings), losses.py (clipped surrogate, loss aggregations)
    preference/             learner.py (PreferenceLearning), losses.py (DPO, IPO, IRPO),
                            pairs.py (pair builders: correctness, consistency, judge)
    rejection_sampling/     learner.py (RejectionSampling: RFT, ReST-EM, STaR, sharpening),
                            selection.py (which completions to keep, B-STaR statistics)
    self_correction/        rise.py (RISE), score.py (SCoRe): multi-turn learners on `episodes`

A config names a learner by its `kind` (`loop.LEARNERS`), never by a module path.
"""
