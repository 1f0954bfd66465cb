"""The quickstart's policy-gradient recipe: several optimizer steps per batch of rollouts, each
on whole groups (benchmarks/README.md measures it against TRL's GRPOTrainer)."""

from __future__ import annotations

from sharpen.loop import LEARNERS, RunConfig, Trainer


def test_the_quickstart_takes_four_optimizer_steps_per_batch_on_disjoint_groups(tmp_path, tiny_model_dir):
    cfg = RunConfig(model=str(tiny_model_dir), steps=2, problems_per_step=8, threads=1)
    config_class = LEARNERS["policy_gradient"][0]
    assert cfg.learner == config_class() and (cfg.learner.minibatches, cfg.learner.lr) == (4, 3e-4)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    learner = trainer.learner
    seen = []
    step = learner.minibatch_step

    def spy(rollouts, *args):
        seen.append([r.problem.id for r in rollouts])
        return step(rollouts, *args)

    learner.minibatch_step = spy
    trainer.train_step(1)
    assert learner.updates == 4
    assert next(iter(learner.optimizer.state.values()))["step"].item() == 4  # four AdamW steps
    assert [len(ids) for ids in seen] == [2, 2, 2, 2]  # 8 groups, 2 per minibatch
    assert len({i for ids in seen for i in ids}) == 8  # each group in exactly one minibatch
