"""Server-sent events in OpenAI's chunk format, and token ids turned into text deltas.

A chat stream is a role chunk, content deltas, a final chunk per choice with its
finish_reason, a usage chunk when `stream_options.include_usage`, then `data: [DONE]`;
a completions stream is text deltas and the final chunks. Plain models stream tokens as they
are sampled; strategy models stream their final answer once chosen (one delta per choice).
"""

from __future__ import annotations

import json
from typing import Callable, Optional, Sequence

from sharpen.models.sampling import cut_at_stop

DONE = "data: [DONE]\n\n"


def event(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


class TextDeltas:
    """The text of a growing list of token ids, handed out as deltas that are always a prefix of
    the final text: a trailing partial character (U+FFFD) and the last len(longest stop) - 1
    characters (which may begin a stop string) are held back until the completion ends.

        deltas = TextDeltas(policy.decode, stop=("\\n",))
        deltas.push(token_id) -> "new text" (may be "")
        deltas.finish(completion.text) -> the rest
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = ()) -> None:
        self.decode = decode
        self.stop = tuple(stop)
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.sent = ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = cut_at_stop(self.decode(self.ids), self.stop).rstrip("\ufffd")
        if self.hold:
            text = text[: max(0, len(text) - self.hold)]
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta

    def finish(self, final_text: str) -> Optional[str]:
        """The rest of the final text; None if what was sent is not its prefix (a tokenizer whose
        decoding of a prefix is not a prefix of the whole decoding)."""
        if not final_text.startswith(self.sent):
            return None
        rest, self.sent = final_text[len(self.sent):], final_text
        return rest
