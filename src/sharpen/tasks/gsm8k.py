"""GSM8K (grade-school math word problems, MIT licence) as a named task, its test split held out.

    get_task("gsm8k")                          # the copy found in GSM8K_DIRS, or $SHARPEN_GSM8K_DIR
    get_task("gsm8k", data_dir="~/gsm8k")      # your copy: a folder with train.jsonl and test.jsonl
    get_task("gsm8k", chat=True)               # the prompt asks for "The answer is N."

The folder holds the files as published in openai/grade-school-math (grade_school_math/data):
`train.jsonl` (7,473 problems) and `test.jsonl` (1,319). The "train" split is train.jsonl and
the "eval" split is test.jsonl, so training never sees an evaluation problem (train questions
that also occur in the test file are dropped). Rows are read by the `jsonl` task (GSM8K format:
the reference is the number after "####", calculator annotations are removed from the gold).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from sharpen.tasks.base import Task
from sharpen.tasks.errors import TaskDataError
from sharpen.tasks.jsonl import jsonl
from sharpen.tasks.registry import register_task

DATA_ENV = "SHARPEN_GSM8K_DIR"
"""An environment variable naming the data folder, for when no `data_dir` option is given."""
GSM8K_DIRS = (
    Path(__file__).resolve().parents[3].parent / "shared" / "data" / "gsm8k",
    Path("/work/shared/data/gsm8k"),
)
"""Where the data is looked for last: `shared/data/gsm8k` beside a source checkout of sharpen,
then the shared folder of the machines sharpen is developed on."""
FILES = {"train": "train.jsonl", "eval": "test.jsonl"}
"""The file of each split."""


def find_data_dir(data_dir: Union[str, Path, None]) -> Path:
    """The folder to read: `data_dir` if given, else $SHARPEN_GSM8K_DIR, else the first of
    GSM8K_DIRS that exists; TaskDataError naming every place looked in when there is none."""
    if data_dir is not None:
        candidates = [(Path(data_dir).expanduser(), "option 'data_dir'")]
    elif os.environ.get(DATA_ENV):
        candidates = [(Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}")]
    else:
        candidates = [(path, "default") for path in GSM8K_DIRS]
    for folder, _ in candidates:
        if all((folder / name).is_file() for name in FILES.values()):
            return folder
    looked = "; ".join(f"{folder} ({why}): {missing_files(folder)}" for folder, why in candidates)
    raise TaskDataError(
        f"task 'gsm8k': no GSM8K data found. Looked in {looked}. Give a folder holding "
        f"{' and '.join(FILES.values())} (from openai/grade-school-math, grade_school_math/data) "
        f"as option data_dir=PATH (e.g. --task-option data_dir=PATH) or in ${DATA_ENV}"
    )


def missing_files(folder: Path) -> str:
    if not folder.is_dir():
        return "no such folder"
    return "missing " + ", ".join(name for name in FILES.values() if not (folder / name).is_file())


@register_task("gsm8k")
def gsm8k(data_dir: Union[str, Path, None] = None, chat: bool = False, max_new_tokens: int = 512) -> Task:
    """GSM8K from `data_dir` (see `find_data_dir`); train.jsonl is the train split, test.jsonl
    the held-out eval split. `chat` states the answer format in the prompt (for instruct models)."""
    folder = find_data_dir(data_dir)
    return jsonl(train_path=folder / FILES["train"], eval_path=folder / FILES["eval"], format="gsm8k",
                 name="gsm8k", max_new_tokens=max_new_tokens, chat=chat)
