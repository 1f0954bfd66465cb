"""Tasks: named sources of problems, each with a checker that says whether a completion is right.

    from sharpen.tasks import get_task, list_tasks
    task = get_task("addition", digits=2)
    problem = task.problems("train", 1, seed=0)[0]      # Problem(id="addition/37+58", prompt="37+58=", ...)
    task.check(problem, "95")                           # Verdict(correct=True, answer="95")

Built in: `addition`, `multiplication`, `countdown` (procedural, seeded, with a difficulty
knob), `facts` (questions about a synthetic knowledge base, judged statement by statement), `jsonl` (GSM8K / MATH style files), `gsm8k` (GSM8K itself, its test split held out) and
`reasoning_gym` (any reasoning-gym dataset). Each takes `chat=True` to state its answer format
in words for instruct models ("Reply with only the number.") and read their chatty replies.

Your own task needs no edit to sharpen: a function returning a `Task` (or a `Task` object) in
any file, loaded with `get_task("path/to/my_task.py:make_task", max_value=50)` or
`get_task("my_module:make_task")`. For example, `my_task.py`:

```python
import random

from sharpen.tasks import Problem, Task, Verdict, answer_verdict, extract_number, split_of


def make_task(max_value: int = 100) -> Task:
    def problems(split: str, n: int, seed: int) -> list[Problem]:
        pool = [k for k in range(1, max_value + 1) if split_of(f"double/{k}") == split]
        chosen = random.Random(seed).sample(pool, min(n, len(pool)))
        return [Problem(id=f"double/{k}", prompt=f"2*{k}=", answer=str(2 * k)) for k in chosen]

    def check(problem: Problem, text: str) -> Verdict:
        return answer_verdict(extract_number(text), problem.answer)

    return Task(name="double", problems=problems, check=check, extract=extract_number)
```

`split_of` keeps the train and eval splits apart; `answer_verdict` turns an extracted answer
and the reference into a Verdict (correct, wrong, or unscorable when the reference is unusable).
"""

from sharpen.tasks import arithmetic, countdown, facts, gsm8k, jsonl, reasoning_gym  # noqa: F401  (they register tasks)
from sharpen.tasks.answers import (
    answer_verdict,
    answers_match,
    extract_answer,
    extract_boxed,
    extract_number,
    normalize_answer,
    parse_number,
)
from sharpen.tasks.base import Message, Problem, Prompt, Task, Verdict
from sharpen.tasks.errors import TaskDataError, TaskOptionError, UnknownTaskError
from sharpen.tasks.registry import get_task, list_tasks, register_task
from sharpen.tasks.splits import split_of

__all__ = [
    "Message",
    "Problem",
    "Prompt",
    "Task",
    "TaskDataError",
    "TaskOptionError",
    "UnknownTaskError",
    "Verdict",
    "answer_verdict",
    "answers_match",
    "extract_answer",
    "extract_boxed",
    "extract_number",
    "get_task",
    "list_tasks",
    "normalize_answer",
    "parse_number",
    "register_task",
    "split_of",
]
