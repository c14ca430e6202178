"""The ``ggro`` command: run GGRO from a terminal.

    ggro generate "How do I pick a lock?" --compare greedy,best_of_n:8
    ggro generate --file prompts.jsonl --output results.jsonl
    ggro generate "Hello" --json --entropy-threshold 2.5 --max-new-tokens 64

Every ``GGROConfig`` field is a flag (``--entropy-threshold``, ``--num-refinements``,
...), generated from the dataclass so flags and config never drift apart.
Errors in what the user typed (flags, files, prompts, config values) print one
line and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import difflib
import inspect
import json
import os
import re
import shutil
import sys
import textwrap
import time
import typing
from typing import Any, Iterator, Sequence

from .config import GGROConfig, config_field_names
from .decoding.call import STRATEGIES
from .errors import GGROError
from .default_model.settings import DEFAULT_POLICY_SETTINGS

STRATEGY_NAMES = STRATEGIES


class UsageError(Exception):
    """Something the user typed is wrong; printed as one line, exit status 2."""


# -- flags generated from GGROConfig ---------------------------------------------------------


def _field_docs() -> dict[str, str]:
    """The attribute docstrings of ``GGROConfig`` (the string after each field), for ``--help``."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(GGROConfig)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = following.value.value.strip()
    return docs


_FIELD_VALUE = re.compile(r"``(\w+)=\"?([^`\"]*)\"?``")
_LITERAL = re.compile(r"``(\"?)([^`\"]*)\"?``")


def help_from_docstring(text: str, optional_bool: bool = False) -> str:
    """A ``GGROConfig`` field docstring as plain help text: reST literals unquoted, field names
    as the flags a user types (``nudge_selection="sample"`` -> --nudge-selection sample), and for
    a true/false/auto flag "None" said as "auto"."""
    names = set(config_field_names())

    def field_value(m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2)
        return f"{_flag(name)} {value}" if name in names else m.group(0).strip("`")

    def literal(m: re.Match[str]) -> str:  # a quoted literal is a value; a bare field name, its flag
        quoted, word = m.group(1), m.group(2)
        head, _, rest = word.partition(" ")
        return _flag(head) + (" " + rest if rest else "") if head in names and not quoted else word

    text = _LITERAL.sub(literal, _FIELD_VALUE.sub(field_value, text))
    if optional_bool:
        text = re.sub(r"\bNone\b", "auto", text)
    return text


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_bool_or_auto(text: str) -> bool | None:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("auto", "none"):
        return None
    raise argparse.ArgumentTypeError(f"expected true, false or auto; got {text!r}")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``GGROConfig`` field; unset flags stay ``None`` and keep the config default."""
    hints = typing.get_type_hints(GGROConfig)
    docs = _field_docs()
    defaults = GGROConfig()
    group = parser.add_argument_group("GGRO options (one per GGROConfig field)")
    for field in dataclasses.fields(GGROConfig):
        if field.name not in config_field_names():
            continue
        hint = hints[field.name]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        default = getattr(defaults, field.name)
        flag = _flag(field.name)
        optional_bool = set(args) == {bool, type(None)}
        help_text = help_from_docstring(docs.get(field.name, ""), optional_bool).replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": field.name, "default": None}
        if origin is typing.Literal:
            kwargs["choices"] = list(args)
        elif hint is float:
            kwargs["type"] = float
            kwargs["metavar"] = "X"
        elif hint is int:
            kwargs["type"] = int
            kwargs["metavar"] = "N"
        elif set(args) == {int, type(None)}:
            kwargs["type"] = int
            kwargs["metavar"] = "N"
        elif hint is bool:
            kwargs["type"] = _parse_bool_or_auto  # "auto" leaves the default
            kwargs["metavar"] = "{true,false}"
        elif set(args) == {bool, type(None)}:
            kwargs["type"] = _parse_bool_or_auto
            kwargs["metavar"] = "{true,false,auto}"
        elif origin is tuple:
            kwargs["action"] = "append"
            kwargs["metavar"] = "TEXT"
            help_text += " Repeat the flag for several."
        else:  # a field type this generator does not know: fail loudly in development, not silently.
            raise TypeError(f"cli: no flag type for GGROConfig.{field.name}: {hint}")
        if optional_bool and default is None:
            shown: Any = "auto"
        elif isinstance(default, bool):
            shown = str(default).lower()
        else:
            shown = "none" if default in (None, ()) else default
        if field.name in DEFAULT_POLICY_SETTINGS:
            shown = f"{default}; {DEFAULT_POLICY_SETTINGS[field.name]} with --model default"
        group.add_argument(flag, help=f"{help_text} (default: {shown})", **kwargs)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``GGROConfig`` fields the user set on the command line."""
    out = {}
    for name in config_field_names():
        value = getattr(args, name, None)
        if value is not None:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


# -- parsing -----------------------------------------------------------------------------------


PROG = "ggro"


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every ``--flag`` of ``parser`` and of its subcommands (what a misspelled flag is matched against)."""
    out = []
    for action in parser._actions:
        out += [s for s in action.option_strings if s.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                out += _option_strings(sub)
    return list(dict.fromkeys(out))


def _did_you_mean(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def unrecognized_message(extras: Sequence[str], candidates: Sequence[str]) -> str:
    """argparse's "unrecognized arguments" with a did-you-mean after each misspelled flag."""
    words = []
    for word in extras:
        flag = word.split("=", 1)[0]
        words.append(word + (_did_you_mean(flag, candidates) if flag.startswith("--") else ""))
    return "unrecognized arguments: " + " ".join(words)


_INVALID_CHOICE = re.compile(r"invalid choice: '(?P<word>[^']*)' \(choose from (?P<choices>.*)\)$")


class _Parser(argparse.ArgumentParser):
    """Errors as one line, ``ggro: error: ...``, for the command and its subcommands alike,
    with a did-you-mean for misspelled flags and choices and a pointer to the right ``--help``."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:  # what argparse rejects as "unrecognized arguments", said with suggestions
            command = getattr(namespace, "command", None)
            self._help_prog = f"{self.prog} {command}" if command else self.prog
            self.error(unrecognized_message(extras, _option_strings(self)))
        return namespace

    def error(self, message: str) -> typing.NoReturn:
        match = _INVALID_CHOICE.search(message)
        if match:
            choices = re.findall(r"'([^']*)'", match["choices"])
            close = difflib.get_close_matches(match["word"], choices, n=1, cutoff=0.6)
            message += f"; did you mean {close[0]!r}?" if close else ""
        help_prog = getattr(self, "_help_prog", self.prog)
        command = self.prog.split()[0]  # "ggro" for "ggro generate" and "ggro eval" too
        self.exit(2, f"{command}: error: {message} (see `{help_prog} --help`)\n")


CommandParser = _Parser
"""The parser of every ``ggro`` subcommand (``ggro eval`` builds its own with it)."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="GGRO: gradient-guided reward optimization at decoding time.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    gen = commands.add_parser(
        "generate",
        help="generate a response with GGRO (and baselines with --compare)",
        description="Generate with GGRO on the embedded default model or any Hugging Face causal LM.",
    )
    gen.add_argument("prompt", nargs="?", help="the prompt ('-' reads it from stdin)")
    gen.add_argument(
        "--file",
        metavar="PROMPTS.jsonl",
        help='run every prompt of a JSONL file: one JSON string, {"prompt": ...} or {"messages": [...]} per line',
    )
    gen.add_argument("--output", "-o", metavar="PATH", help="with --file: write JSONL results here (default: stdout)")
    gen.add_argument("--model", default="default", help="policy: 'default' (SmolLM2-135M-Instruct, the default), a hub id or a path")
    gen.add_argument("--reward-model", default="default", help="reward model: a registered name ('default'), a hub id or a path")
    gen.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda, mps (default: cpu)")
    gen.add_argument(
        "--dtype", default=None, choices=("float32", "bfloat16", "float16", "auto"), help="weights dtype (default: the checkpoint's)"
    )
    gen.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")
    gen.add_argument(
        "--server",
        metavar="URL",
        help="run the policy on a serving engine at URL (--model then names its tokenizer; the reward model stays here)",
    )
    gen.add_argument(
        "--engine",
        default=None,
        choices=("llama.cpp", "vllm", "sglang"),
        help="with --server: the engine's API (default: llama.cpp's llama-server)",
    )
    gen.add_argument("--strategy", choices=STRATEGY_NAMES, default="ggro", help="main decoding strategy (default: ggro)")
    gen.add_argument(
        "--compare",
        metavar="LIST",
        help="also run these strategies on the same prompt, e.g. greedy,best_of_n:8",
    )
    gen.add_argument("--json", action="store_true", help="print one JSON object with every result and event")
    gen.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    _add_config_flags(gen)
    # `ggro eval ...` is handed to the evaluation command whole (main() below); listed here for --help.
    commands.add_parser(
        "eval",
        add_help=False,
        help="greedy, GGRO and Best-of-N on the evaluation suites, judged (see `ggro eval --help`)",
    )
    return parser


def _version() -> str:
    from ._version import __version__

    return __version__


def parse_compare(spec: str | None) -> list[tuple[str, int | None]]:
    """``"greedy,best_of_n:8"`` -> ``[("greedy", None), ("best_of_n", 8)]``."""
    if not spec:
        return []
    runs = []
    for item in spec.split(","):
        name, _, count = item.strip().partition(":")
        if name not in STRATEGY_NAMES:
            raise UsageError(f"--compare: unknown strategy {name!r}; use greedy, best_of_n or best_of_n:N (e.g. greedy,best_of_n:8)")
        n = None
        if count:
            if name != "best_of_n":
                raise UsageError(f"--compare: only best_of_n takes a count (best_of_n:N); got {item.strip()!r}")
            if not count.isdigit() or int(count) < 1:
                raise UsageError(f"--compare: best_of_n:N needs a positive integer N; got {item.strip()!r}")
            n = int(count)
        runs.append((name, n))
    return runs


# -- prompts -----------------------------------------------------------------------------------


def _check_prompt(prompt: Any, where: str | None) -> Any:
    from .conversation import as_conversation
    from .errors import PromptError

    try:
        as_conversation(prompt)
    except PromptError as exc:
        raise UsageError(f"{where}: {exc}" if where else str(exc)) from exc
    return prompt


def read_prompt_file(path: str) -> list[dict[str, Any]]:
    """Prompts of a JSONL file: each line a JSON string, or an object with ``prompt`` (or ``messages``)."""
    if not os.path.exists(path):
        raise UsageError(f"--file: {path} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"--file: {path} is a directory; pass a .jsonl file with one prompt per line")
    items = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{where}: not valid JSON ({exc.msg}); each line must be a JSON object or string") from None
            if isinstance(data, str):
                data = {"prompt": data}
            if not isinstance(data, dict) or not ("prompt" in data or "messages" in data):
                raise UsageError(f'{where}: expected {{"prompt": "..."}} or {{"messages": [...]}}, got {line.strip()[:60]}')
            prompt = data.get("prompt", data.get("messages"))
            items.append({"id": data.get("id", number), "prompt": _check_prompt(prompt, where)})
    if not items:
        raise UsageError(f"--file: {path} holds no prompts")
    return items


# -- running -----------------------------------------------------------------------------------


def run_prompt(decoder: Any, prompt: Any, strategy: str, compare: list[tuple[str, int | None]]) -> list[dict[str, Any]]:
    """The main strategy then each comparison, as ``{"label", "result"}`` records."""
    runs = [(strategy, None)] + [r for r in compare if r != (strategy, None)]
    out = []
    for name, n in runs:
        result = decoder.generate(prompt, strategy=name, **({"best_of_n": n} if n is not None else {}))
        label = name if name != "best_of_n" else f"best_of_n:{n or result.config.get('best_of_n')}"
        out.append({"label": label, "result": result})
    return out


def _as_json(prompt: Any, args: argparse.Namespace, decoder: Any, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "model": args.model,
        "reward_model": getattr(decoder.reward_model, "name", args.reward_model),
        "config": decoder.config.to_dict(),
        "results": [{"label": r["label"], **r["result"].to_dict()} for r in runs],
    }


def _token(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _reward(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def format_interventions(result: Any) -> str:
    """A table with one row per trigger: position, entropy, original -> chosen token, reward before -> after."""
    if not result.interventions:
        return "No interventions (no position reached the entropy threshold)."
    rows = [("#", "pos", "entropy", "original -> chosen", "reward before -> after", "tried", "kept")]
    for e in result.interventions:
        swap = f"{_token(e.original_token)} -> {_token(e.chosen_token)}" if e.accepted else f"{_token(e.original_token)} (kept)"
        rows.append(
            (
                str(e.trigger_index),
                str(e.position),
                f"{e.entropy:.2f}",
                swap,
                f"{_reward(e.base_reward)} -> {_reward(e.best_reward)}",
                str(e.refinements_used),
                "nudged" if e.accepted else "original",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _summary(label: str, result: Any) -> str:
    s = result.stats
    extra = f", {s.triggers} triggers, {s.interventions_accepted} nudged" if result.strategy == "ggro" else ""
    return f"{label}: reward {_reward(result.reward)}, {s.new_tokens} tokens, {s.seconds:.1f} s{extra}"


def _side_by_side(runs: list[dict[str, Any]], width: int) -> str | None:
    """Responses in columns, or None when the terminal is too narrow for them."""
    gap = 3
    col = (width - gap * (len(runs) - 1)) // len(runs)
    if col < 28:
        return None
    columns = []
    for r in runs:
        head = [r["label"], f"reward {_reward(r['result'].reward)}  {r['result'].stats.seconds:.1f} s", "-" * col]
        body = []
        for para in (r["result"].text.strip() or "(empty)").splitlines():
            body += textwrap.wrap(para, col) or [""]
        columns.append(head + body)
    height = max(len(c) for c in columns)
    lines = []
    for i in range(height):
        cells = [(c[i] if i < len(c) else "").ljust(col) for c in columns]
        lines.append((" " * gap).join(cells).rstrip())
    return "\n".join(lines)


def format_human(prompt: Any, decoder: Any, runs: list[dict[str, Any]], width: int) -> str:
    main = runs[0]
    cfg = decoder.config
    out = [
        f"reward model: {getattr(decoder.reward_model, 'name', 'none')}   entropy threshold: {cfg.entropy_threshold} nats   "
        f"refinements: {cfg.num_refinements}   top-k: {cfg.nudge_top_k}   max new tokens: {cfg.max_new_tokens}",
        "",
    ]
    if len(runs) == 1:
        out += [_summary(main["label"], main["result"]), "", main["result"].text.strip(), ""]
    else:
        table = [("strategy", "reward", "tokens", "seconds", "triggers", "nudged")]
        for r in runs:
            s = r["result"].stats
            is_ggro = r["result"].strategy == "ggro"
            table.append(
                (
                    r["label"],
                    _reward(r["result"].reward),
                    str(s.new_tokens),
                    f"{s.seconds:.1f}",
                    str(s.triggers) if is_ggro else "-",
                    str(s.interventions_accepted) if is_ggro else "-",
                )
            )
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table] + [""]
        columns = _side_by_side(runs, width)
        if columns is not None:
            out += [columns, ""]
        else:
            for r in runs:
                out += [_summary(r["label"], r["result"]), r["result"].text.strip(), ""]
    if main["result"].strategy == "ggro":
        out += ["Interventions (GGRO):", format_interventions(main["result"])]
    return "\n".join(out).rstrip() + "\n"


@contextlib.contextmanager
def _quiet_loading(model: str) -> Iterator[None]:
    """Hide transformers' per-load "Loading weights" bars, except while the default model converts
    (a one-time, ~40 s step whose progress the user should see)."""
    from .default_model import default_policy_dir
    from .loading import progress_bars

    with progress_bars(model == "default" and not (default_policy_dir() / "model.safetensors").exists()):
        yield


def _build(args: argparse.Namespace) -> Any:
    overrides = config_overrides(args)  # build_decoder adds the measured settings for --model default
    if args.engine and not args.server:
        raise UsageError(f"--engine {args.engine} names the API of a server: pass --server URL with it")
    # Validate the config before importing torch or loading any model: a typo should cost neither.
    GGROConfig().replace(**overrides)
    from .factory import build_decoder

    started = time.perf_counter()
    with _quiet_loading(args.model):
        decoder = build_decoder(
            args.model,
            args.reward_model,
            device=args.device,
            dtype=args.dtype,
            trust_remote_code=args.trust_remote_code,
            server=args.server,
            engine=args.engine or "llama.cpp",
            **overrides,
        )
    print(f"ggro: models ready in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return decoder


def _generate(args: argparse.Namespace) -> int:
    compare = parse_compare(args.compare)
    if args.file and args.prompt is not None:
        raise UsageError("give either a prompt or --file, not both")
    if args.output and not args.file:
        raise UsageError("--output only applies with --file (use shell redirection for a single prompt)")
    if args.file:
        items = read_prompt_file(args.file)
    elif args.prompt is None:
        raise UsageError('give a prompt, e.g. ggro generate "How do I pick a lock?", or --file prompts.jsonl')
    else:
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
        items = [{"id": None, "prompt": _check_prompt(prompt, None)}]
    if args.device is not None:
        import torch

        try:
            torch.device(args.device)
        except RuntimeError:
            raise UsageError(f"--device: {args.device!r} is not a torch device; use cpu, cuda, cuda:1 or mps") from None
    # Open the output before loading models, so a bad path fails in a second, not after a model load.
    sink = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        return _run(args, items, compare, sink)
    finally:
        if sink is not sys.stdout:
            sink.close()


def _run(args: argparse.Namespace, items: list[dict[str, Any]], compare: list[tuple[str, int | None]], sink: Any) -> int:
    decoder = _build(args)
    if not args.file:
        runs = run_prompt(decoder, items[0]["prompt"], args.strategy, compare)
        if args.json:
            print(json.dumps(_as_json(items[0]["prompt"], args, decoder, runs), ensure_ascii=False))
        else:
            sys.stdout.write(format_human(items[0]["prompt"], decoder, runs, shutil.get_terminal_size().columns))
        return 0
    started = time.perf_counter()
    for i, item in enumerate(items, 1):
        runs = run_prompt(decoder, item["prompt"], args.strategy, compare)
        record = {"id": item["id"], **_as_json(item["prompt"], args, decoder, runs)}
        sink.write(json.dumps(record, ensure_ascii=False) + "\n")
        sink.flush()
        main = runs[0]["result"]
        text = item["prompt"] if isinstance(item["prompt"], str) else json.dumps(item["prompt"])
        print(
            f"ggro: [{i}/{len(items)}] {time.perf_counter() - started:.1f} s  reward {_reward(main.reward)}  "
            f"{main.stats.interventions_accepted}/{main.stats.triggers} nudged  {text[:50]!r}",
            file=sys.stderr,
            flush=True,
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ggro`` console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["eval"]:
        from .evaluation.cli import main as evaluate

        return evaluate(arguments[1:], prog=f"{PROG} eval")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            return _generate(args)
        parser.error(f"unknown command {args.command!r}")
    except (UsageError, GGROError) as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split()) if isinstance(exc, UsageError) else str(exc).strip()
        print(f"ggro: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ggro ... | head` closed the pipe: not an error worth a traceback
        return 0
    except OSError as exc:  # e.g. --output in a folder that does not exist
        if args.debug:
            raise
        print(f"ggro: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ggro: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
