"""Tools for local chat templates (framework-free): detecting support, a ChatML tool template, parsing calls.

A local policy calls a tool by *writing* the call in its output; which syntax it
writes depends on how it was trained. ``parse_tool_calls`` understands the common
ones: Hermes / Qwen ``<tool_call>{json}</tool_call>`` blocks (or a JSON list of
calls inside one block, as SmolLM2 and APIGen-trained models write), Mistral's
``[TOOL_CALLS] [...]``, Llama's ``<|python_tag|>{json}`` and a bare JSON object
(or list of objects) naming a bound tool.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:  # a type only: models.py imports this module, and it must stay framework-free
    from .decoding import GGRODecoder

CHATML_TOOLS_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\' }}'
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' and loop.first %}"
    "{%- elif message['role'] == 'assistant' and message.get('tool_calls') %}"
    "{{- '<|im_start|>assistant\\n' + (message['content'] or '') }}"
    "{%- for call in message['tool_calls'] %}"
    "{%- set fn = call['function'] if call.get('function') else call %}"
    "{{- '<tool_call>\\n{\"name\": \"' + fn['name'] + '\", \"arguments\": ' + (fn['arguments'] | tojson) "
    "+ '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + message['content'] + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""A ChatML chat template (SmolLM2, Qwen, tiny test tokenizers) that renders tools, tool calls and
tool results in the Hermes / Qwen 2.5 format that ``parse_tool_calls`` reads back."""

_TOOLS_VARIABLE = re.compile(r"\btools\b")


def template_source(tokenizer: Any) -> str:
    """The tokenizer's chat template text ('' when it has none; named templates joined)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        return "\n".join(str(t) for t in template.values())
    return template or ""


def supports_tools(tokenizer: Any) -> bool:
    """Whether the chat template renders the ``tools`` it is given (it references that variable)."""
    return bool(_TOOLS_VARIABLE.search(template_source(tokenizer)))


def _with_tool_use(own: Any, template: str) -> Any:
    """``own`` (a template, or named templates) plus ``template`` as its ``"tool_use"`` template.

    transformers renders the ``"tool_use"`` template only when a call passes
    ``tools``, and ``"default"`` otherwise, so prompts without tools stay
    byte-identical to what ``own`` renders (its system prompt included).
    """
    if not own:
        return template  # nothing to keep: the tool template is the only one
    if isinstance(own, dict):
        return {**own, "tool_use": template}  # (replaces an earlier "tool_use" template)
    return {"default": own, "tool_use": template}


def ensure_tool_template(tokenizer: Any, template: str = CHATML_TOOLS_TEMPLATE) -> Any:
    """Give ``tokenizer`` a tool template when its chat template renders no tools; returns it.

    The tokenizer then holds named templates ``{"default": its own, "tool_use":
    template}``: tool-less prompts are unchanged, prompts with tools render them.
    A tokenizer without any chat template is left alone (a tool template alone
    would change how its plain prompts are formatted). Changes ``tokenizer`` in
    place: use it on a tokenizer you own (``with_tool_template`` copies first).

    Example:
        >>> ensure_tool_template(tokenizer).chat_template.keys()  # doctest: +SKIP
        dict_keys(['default', 'tool_use'])
    """
    own = getattr(tokenizer, "chat_template", None)
    if own and not supports_tools(tokenizer):
        tokenizer.chat_template = _with_tool_use(own, template)
    return tokenizer


def with_tool_template(decoder: GGRODecoder, template: str = CHATML_TOOLS_TEMPLATE) -> GGRODecoder:
    """A decoder sharing ``decoder``'s policy, reward model and config whose tokenizer renders tools.

    The tokenizer is copied, so the cached policy tokenizer other chains use is
    unchanged; the copy holds ``{"default": its own template, "tool_use": template}``,
    the form ``ensure_tool_template`` gives the embedded default.

    Example:
        >>> chat = ChatGGRO(decoder=with_tool_template(build_decoder("my/policy", "default")))  # doctest: +SKIP
    """
    tokenizer = copy.copy(decoder.tokenizer)
    tokenizer.chat_template = _with_tool_use(getattr(tokenizer, "chat_template", None), template)
    twin = copy.copy(decoder)
    twin.tokenizer = tokenizer
    return twin


@dataclass
class ParsedToolCalls:
    """What ``parse_tool_calls`` found in a response."""

    content: str
    """The response with the tool-call markup removed."""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """LangChain ``ToolCall`` dicts: ``{"name", "args", "id", "type": "tool_call"}``."""
    invalid_tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """LangChain ``InvalidToolCall`` dicts for calls whose JSON could not be read."""


def _call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _as_call(obj: Any, raw: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A (valid, invalid) pair from one decoded JSON object; exactly one is not None."""
    if isinstance(obj, dict) and isinstance(obj.get("function"), dict):
        obj = obj["function"]  # OpenAI shape: {"type": "function", "function": {...}}
    name = obj.get("name") if isinstance(obj, dict) else None
    if not isinstance(name, str) or not name:
        return None, _invalid(None, raw, "tool call has no 'name'")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            return None, _invalid(name, args, f"arguments are not valid JSON: {exc}")
    if not isinstance(args, dict):
        return None, _invalid(name, json.dumps(args), "arguments must be a JSON object")
    return {"name": name, "args": args, "id": _call_id(), "type": "tool_call"}, None


def _invalid(name: str | None, args: str, error: str) -> dict[str, Any]:
    return {"name": name, "args": args, "id": _call_id(), "error": error, "type": "invalid_tool_call"}


def _strip_fence(text: str) -> str:
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.DOTALL)
    return fenced.group(1) if fenced else text


def _loads(text: str) -> Any:
    """JSON value at the start of ``text`` (trailing text ignored), or raises ValueError."""
    value, _ = json.JSONDecoder().raw_decode(text.strip())
    return value


_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", flags=re.DOTALL)


def parse_tool_calls(text: str, tool_names: Sequence[str] | None = None) -> ParsedToolCalls:
    """Find tool calls in a model's ``text``.

    Markup formats (``<tool_call>``, ``[TOOL_CALLS]``, ``<|python_tag|>``) are always
    parsed; a bare JSON response counts as a call only when its ``name`` is one of
    ``tool_names``, so a plain JSON answer is not mistaken for a call.
    """
    names = set(tool_names or ())
    if "<tool_call>" in text:
        calls, invalid = [], []
        for match in _HERMES.finditer(text):
            raw = match.group(1)
            try:
                value = _loads(raw)
            except ValueError as exc:
                invalid.append(_invalid(None, raw, f"not valid JSON: {exc}"))
                continue
            # One call per block (Hermes, Qwen) or a list of calls in one block (SmolLM2, APIGen).
            for obj in value if isinstance(value, list) else [value]:
                valid, bad = _as_call(obj, json.dumps(obj) if isinstance(value, list) else raw)
                if valid:
                    calls.append(valid)
                else:
                    invalid.append(bad)
        return ParsedToolCalls(_HERMES.sub("", text).strip(), calls, invalid)
    for marker in ("[TOOL_CALLS]", "<|python_tag|>"):
        if marker in text:
            before, _, raw = text.partition(marker)
            return _parse_json_calls(raw, before.strip(), names=None)
    candidate = _strip_fence(text.strip())
    if candidate.startswith(("{", "[")) and names:
        parsed = _parse_json_calls(candidate, "", names=names)
        if parsed.tool_calls:
            return parsed
    return ParsedToolCalls(text)


def _parse_json_calls(raw: str, content: str, names: set[str] | None) -> ParsedToolCalls:
    try:
        value = _loads(raw)
    except ValueError as exc:
        return ParsedToolCalls(content, [], [_invalid(None, raw.strip(), f"not valid JSON: {exc}")])
    objects = value if isinstance(value, list) else [value]
    calls, invalid = [], []
    for obj in objects:
        valid, bad = _as_call(obj, json.dumps(obj))
        if names is not None and (valid is None or valid["name"] not in names):
            return ParsedToolCalls(raw if not content else content)  # not a call to a bound tool
        if valid:
            calls.append(valid)
        else:
            invalid.append(bad)
    return ParsedToolCalls(content, calls, invalid)


CALL_OPENING = "<tool_call>"
"""Where a Hermes tool call starts in the response text (the format the grammar enforces)."""


class ToolCallHoldback:
    """Streams the text before a tool call: nothing from ``<tool_call>`` on, not even a partial tag, and
    trailing whitespace only once more text follows (the parsed content ends without it)."""

    def __init__(self) -> None:
        self.shown = ""

    def update(self, text: str, *, final: bool) -> tuple[str, str]:
        """``(visible text so far, newly visible text)`` given the cumulative response ``text``."""
        cut = text.find(CALL_OPENING)
        opened = cut >= 0
        if not opened:
            cut = len(text)
            if not final:
                # Hold back a tail that may still grow into the opening tag.
                for k in range(min(len(CALL_OPENING) - 1, len(text)), 0, -1):
                    if text.endswith(CALL_OPENING[:k]):
                        cut = len(text) - k
                        break
                cut = len(text[:cut].rstrip())  # trailing space is dropped if a call follows
        visible = text[:cut].rstrip() if opened or final else text[:cut]
        if not visible.startswith(self.shown):
            visible = self.shown  # never take back what was shown
        new = visible[len(self.shown) :]
        self.shown = visible
        return visible, new
