"""What a request's `model` names: the served model (plain sampling) or `STRATEGY/NAME`.

    resolve("default", served="default")                     -> None (plain sampling)
    resolve("self_consistency-8/default", served="default")  -> ("self_consistency", {"n": 8})

A strategy spec follows `sharpen.strategies.registry`'s grammar, parsed without permission to
load user code: a request may name only registered strategies and signals (a spec such as
`best_of_n-1:/some/file.py:f` is a 400 and nothing is imported).

Retry with binary feedback reads each problem's reference answer. A request carries none, so it
is listed and served only by a server started with reference problems (`--references
SPLIT:N`: the task's problems, looked up by the request's last user message); otherwise retry
is served with feedback "none" (a neutral "try again") and `self_refine` checks with the
model's own verification. /v1/models says which.
"""

from __future__ import annotations

from typing import Any, Optional

from sharpen.serving.errors import APIError, bad
from sharpen.strategies import StrategySpecError, parse_strategy_spec

LISTED_STRATEGIES = {
    "self_consistency-8": "strategy: majority vote over 8 samples",
    "best_of_n-8:self_certainty": "strategy: best of 8 samples by the model's self-certainty",
    "debate-3x2": "strategy: 3 agents debate for 2 rounds",
    "retry-3:none": "strategy: up to 3 attempts, told a neutral 'try again' (no reference answer is read)",
    "self_refine-2": "strategy: up to 2 attempts, checked by the model's own verification",
}
"""Examples /v1/models lists (any spec of the grammar is served, within the work limit)."""


def model_cards(served: str, references: int = 0) -> list[dict]:
    """/v1/models' entries; `references`: how many reference problems the server can look up."""
    cards = [{"id": served, "description": "plain sampling"}]
    cards += [{"id": f"{spec}/{served}", "description": text} for spec, text in LISTED_STRATEGIES.items()]
    if references:
        cards.append({"id": f"retry-3/{served}", "description": "strategy: up to 3 attempts with binary feedback "
                      f"from the reference answer (only for the server's {references} reference problems)"})
    return cards


def needs_reference(name: str, options: dict[str, Any]) -> bool:
    """Whether the strategy reads problems' reference answers (retry with binary feedback)."""
    return (name == "retry" or options.get("inner") == "retry") and options.get("feedback", "binary") == "binary"


def not_found(model: str, served: str, why: str = "") -> APIError:
    return APIError(404, f"model {model!r} does not exist{': ' + why if why else ''}; use {served!r} or "
                    f"'STRATEGY/{served}', e.g. 'self_consistency-8/{served}' (GET /v1/models lists examples)",
                    param="model", code="model_not_found")


def resolve(model: str, *, served: str, max_n: int, n: int,
            references: bool = False) -> Optional[tuple[str, dict[str, Any]]]:
    """None for the served model, else the strategy (name, options) the model names; raises
    APIError 404 (not a model here) or 400 (a spec this server refuses, or too much work)."""
    if model == served:
        return None
    if not model.endswith("/" + served):
        raise not_found(model, served)
    spec = model[: -len(served) - 1]
    try:
        name, options = parse_strategy_spec(spec)  # no user code from a request
    except StrategySpecError as err:
        if "names user code" in str(err):
            raise bad(f"model {model!r}: {err}", "model", "user_code_refused") from None
        raise not_found(model, served, str(err)) from None
    if needs_reference(name, options) and not references:
        raise bad(f"model {model!r}: retry with binary feedback reads each problem's reference answer, and a "
                  f"request has none (this server was started without --references); use 'retry-3:none/{served}' (a neutral 'try again') or "
                  f"'self_refine-3/{served}' (the model's own verification)", "model")
    work = n
    for value in options.values():
        if isinstance(value, int) and not isinstance(value, bool):
            if value > max_n:
                raise bad(f"model {model!r}: {value} is over the limit of {max_n}", "model")
            work *= value
    if work > 16 * max_n:
        raise bad(f"model {model!r} with n={n} asks for too much work ({work} > {16 * max_n})", "model")
    return name, options
