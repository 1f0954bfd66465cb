"""Config mechanism: YAML + pydantic, overrides, and errors that name file, key and line."""

from typing import Any, Optional

import pytest
from pydantic import Field

from sharpen.config import ConfigError, ConfigModel, dump_config, load_config


class Optim(ConfigModel):
    lr: float = Field(1e-3, description="Learning rate.")
    clip: Optional[float] = Field(1.0, description="Gradient-norm clip; null turns it off.")


class Sampling(ConfigModel):
    ks: list[int] = Field([1, 8], description="The k of every pass@k / maj@k.")
    temperature: float = Field(1.0, description="Softmax temperature.")


class Run(ConfigModel):
    name: str = Field("run", description="Run name.")
    seed: int = Field(0, description="Global seed.")
    resume: bool = Field(False, description="Continue from the last step.")
    optim: Optim = Field(default_factory=Optim, description="Optimiser settings.")
    sampling: Sampling = Field(default_factory=Sampling, description="Sampling settings.")
    extras: dict[str, Any] = Field(default_factory=dict, description="Free-form notes.")


GOOD = """\
name: add2
seed: 3
optim:
  lr: 0.0005
sampling:
  ks: [1, 4]
"""


def write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_load_defaults_and_round_trip(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), Run)
    assert (cfg.name, cfg.seed, cfg.optim.lr, cfg.optim.clip) == ("add2", 3, 5e-4, 1.0)
    assert cfg.sampling.ks == [1, 4]
    again = load_config(write(tmp_path, dump_config(cfg)), Run)
    assert again == cfg
    assert dump_config(cfg).startswith("name: add2\nseed: 3\n")
    assert load_config(write(tmp_path, ""), Run) == Run()  # an empty file means all defaults


def test_overrides_are_parsed_as_yaml(tmp_path):
    cfg = load_config(
        write(tmp_path, GOOD),
        Run,
        ["optim.lr=3e-4", "resume=true", "sampling.ks=[1,8]", "optim.clip=null", "extras.note=hi",
         "name=x=y"],
    )
    assert cfg.optim.lr == 3e-4 and cfg.resume is True and cfg.sampling.ks == [1, 8]
    assert cfg.optim.clip is None and cfg.extras == {"note": "hi"} and cfg.name == "x=y"
    # an override may create a section the file does not have
    cfg = load_config(write(tmp_path, "seed: 1\n"), Run, ["sampling.temperature=0"])
    assert cfg.sampling.temperature == 0.0


def test_unknown_key_names_file_key_and_line(tmp_path):
    path = write(tmp_path, GOOD + "  temprature: 0.7\n")  # line 7, under sampling
    with pytest.raises(ConfigError) as e:
        load_config(path, Run)
    msg = str(e.value)
    assert f"{path}:7: sampling.temprature: unknown key" in msg
    assert "known keys there: ks, temperature" in msg


def test_wrong_type_names_file_key_and_line(tmp_path):
    path = write(tmp_path, GOOD.replace("lr: 0.0005", "lr: fast"))
    with pytest.raises(ConfigError) as e:
        load_config(path, Run)
    msg = str(e.value)
    assert f"{path}:4: optim.lr:" in msg and "valid number" in msg and "'fast'" in msg


def test_wrong_item_in_a_list_points_at_its_line(tmp_path):
    path = write(tmp_path, "sampling:\n  ks:\n    - 1\n    - eight\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:4: sampling\.ks\.1: .*valid integer"):
        load_config(path, Run)


def test_every_error_is_reported(tmp_path):
    path = write(tmp_path, "seed: x\nbogus: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, Run)
    msg = str(e.value)
    assert f"{path}:1: seed:" in msg and f"{path}:2: bogus: unknown key" in msg


def test_override_errors_say_command_line(tmp_path):
    path = write(tmp_path, GOOD)
    unknown = r"override 'optim.lrr=1'.*unknown key 'optim.lrr'.*known keys there: lr, clip"
    with pytest.raises(ConfigError, match=unknown):
        load_config(path, Run, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"'seed' is a single value, it has no sub-keys"):
        load_config(path, Run, ["seed.x=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, Run, ["seed"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, Run, ["sampling.ks=[1,"])
    with pytest.raises(ConfigError) as e:
        load_config(path, Run, ["optim.lr=fast"])
    msg = str(e.value)
    assert "optim.lr:" in msg and "from the command-line override 'optim.lr=fast'" in msg
    assert f"{path}:" in msg and f"{path}:4" not in msg  # the file is named, but no line of it is blamed


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml", Run)
    path = write(tmp_path, "name: a\noptim:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: invalid YAML: .*flow sequence on line 3"):
        load_config(path, Run)
    path = write(tmp_path, "name: a\n  seed: 1\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: invalid YAML"):
        load_config(path, Run)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"), Run)


def test_every_field_must_be_described():
    with pytest.raises(TypeError, match="Bad has fields without a description: lr"):

        class Bad(ConfigModel):
            lr: float = 1e-3
            seed: int = Field(0, description="Seed.")


def test_learner_sections_of_every_kind_report_file_line_and_key(tmp_path):
    from sharpen.loop import RunConfig

    path = tmp_path / "run.yaml"
    path.write_text("steps: 3\nlearner:\n  kind: preference\n  loss: dpo\n  betta: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, RunConfig)
    message = str(info.value)
    assert (f"{path}:5: learner.betta: unknown key; known keys there: micro_batch_tokens, gradient_checkpointing, lora, "
            "kind, loss, pairs") in message
    cfg = load_config(_write(tmp_path, "steps: 3\nlearner: {kind: preference}\n"), RunConfig, ["learner.beta=0.3"])
    assert cfg.learner.kind == "preference" and cfg.learner.beta == 0.3
    with pytest.raises(ConfigError, match=r"unknown key 'learner.betta'; known keys there: .*advantage.*beta"):
        load_config(_write(tmp_path, "steps: 3\n"), RunConfig, ["learner.betta=0.3"])


def _write(tmp_path, text):
    path = tmp_path / "written.yaml"
    path.write_text(text)
    return path
