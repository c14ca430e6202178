"""Chain-level configuration: GGRO options in config["configurable"] reach the model, in LCEL, LangGraph,
with_config, batch and astream_events; GGRO-looking keys nobody reads warn, other runnables' keys do not."""

from __future__ import annotations

import warnings
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool

from ggro_integrations.errors import ConfigError
from ggro_integrations.langchain import (
    CONFIGURABLE,
    GGROLLM,
    ChatGGRO,
    GGROConfigWarning,
    GGROInterventionHandler,
    configurable_ggro,
)

QUESTION = "Hello there, how are you?"


def readme_chain(chat: ChatGGRO) -> Any:
    """The README's chain: prompt | chat | StrOutputParser()."""
    prompt = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{question}")])
    return prompt | chat | StrOutputParser()


def thresholds(events: list[Any]) -> set[float]:
    return {e["threshold"] if isinstance(e, dict) else e.threshold for e in events}


def ggro_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, GGROConfigWarning)]


def test_readme_chain_follows_the_configured_threshold(chat):
    chain = readme_chain(chat)
    handler = GGROInterventionHandler()
    chain.invoke({"question": QUESTION}, config={"configurable": {"entropy_threshold": 2.5}, "callbacks": [handler]})
    assert handler.events and thresholds(handler.events) == {2.5}  # the tiny decoder's own threshold is 0.5
    handler.clear()
    chain.invoke({"question": QUESTION}, config={"configurable": {"entropy_threshold": 100.0}, "callbacks": [handler]})
    assert handler.events == []  # no token is that uncertain: no triggers at all
    handler.clear()
    chain.invoke({"question": QUESTION}, config={"callbacks": [handler]})
    assert thresholds(handler.events) == {0.5}  # nothing configured: the decoder's setting


def test_with_config_and_precedence(chat):
    configured = chat.with_config(configurable={"entropy_threshold": 0.2})
    assert thresholds(configured.invoke(QUESTION).response_metadata["ggro_interventions"]) == {0.2}
    # field < configurable < bind() / per-call keyword
    bound = chat.bind(entropy_threshold=1.2).with_config(configurable={"entropy_threshold": 0.2})
    assert thresholds(bound.invoke(QUESTION).response_metadata["ggro_interventions"]) <= {1.2}
    field = ChatGGRO(decoder=chat.decoder, entropy_threshold=3.0)
    events = field.invoke(QUESTION, {"configurable": {"entropy_threshold": 0.3}}).response_metadata
    assert thresholds(events["ggro_interventions"]) == {0.3}


def test_configured_values_show_in_invocation_params(chat):
    seen: list[dict[str, Any]] = []

    class Params(BaseCallbackHandler):
        def on_chat_model_start(self, serialized: Any, messages: Any, *, invocation_params: Any, **kw: Any) -> None:
            seen.append(invocation_params)

    config = {"configurable": {"entropy_threshold": 0.7, "max_tokens": 3, "stop": ["zz"]}, "callbacks": [Params()]}
    message = chat.invoke(QUESTION, config)
    assert seen[0]["entropy_threshold"] == 0.7 and seen[0]["max_new_tokens"] == 3 and seen[0]["stop"] == ["zz"]
    assert message.usage_metadata["output_tokens"] <= 3


def test_batch_with_per_input_configs(chat, llm):
    configs = [{"configurable": {"entropy_threshold": 0.2}}, {"configurable": {"entropy_threshold": 0.9}}]
    messages = chat.batch([QUESTION, QUESTION], configs)
    assert [thresholds(m.response_metadata["ggro_interventions"]) for m in messages] == [{0.2}, {0.9}]
    # BaseLLM.batch sends every prompt through one _generate with one set of options: GGROLLM groups them.
    handler = GGROInterventionHandler()
    texts = llm.batch(
        [QUESTION, "Tell me about water.", QUESTION], [{**c, "callbacks": [handler]} for c in configs + configs[:1]]
    )
    assert texts[0] == texts[2] == llm.invoke(QUESTION, entropy_threshold=0.2)
    assert texts[1] == llm.invoke("Tell me about water.", entropy_threshold=0.9)
    assert sorted(tuple(thresholds(v)) for v in handler.by_run.values()) == [(0.2,), (0.2,), (0.9,)]


async def test_async_batch_stream_and_astream_events(chat, llm):
    configs = [{"configurable": {"entropy_threshold": 0.2}}, {"configurable": {"entropy_threshold": 0.9}}]
    messages = await chat.abatch([QUESTION, QUESTION], configs)
    assert [thresholds(m.response_metadata["ggro_interventions"]) for m in messages] == [{0.2}, {0.9}]
    handler = GGROInterventionHandler()
    await llm.abatch([QUESTION, QUESTION], [{**c, "callbacks": [handler]} for c in configs])
    assert sorted(tuple(thresholds(v)) for v in handler.by_run.values()) == [(0.2,), (0.9,)]
    custom = [
        ev["data"]
        async for ev in readme_chain(chat).astream_events(
            {"question": QUESTION}, {"configurable": {"entropy_threshold": 0.3}}, version="v2"
        )
        if ev["event"] == "on_custom_event"
    ]
    assert custom and thresholds(custom) == {0.3}
    handler = GGROInterventionHandler()
    text = "".join([c async for c in llm.astream(QUESTION, {"configurable": {"max_new_tokens": 3}})])
    assert text == llm.invoke(QUESTION, max_new_tokens=3)
    chunks = [c async for c in chat.astream(QUESTION, {"configurable": {"strategy": "greedy"}, "callbacks": [handler]})]
    assert (
        handler.events == [] and "".join(c.content for c in chunks) == chat.invoke(QUESTION, strategy="greedy").content
    )


def test_v3_stream_events_read_the_config(chat):
    handler = GGROInterventionHandler()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the v3 protocol is beta and says so
        stream = chat.stream_events(
            QUESTION, {"configurable": {"entropy_threshold": 0.2}, "callbacks": [handler]}, version="v3"
        )
        assert stream.output.text == chat.invoke(QUESTION, entropy_threshold=0.2).content
    assert handler.events and thresholds(handler.events) == {0.2}


def test_reward_model_and_strategy_from_the_config(chat):
    _, _, _, reward_b = __import__("lc_tiny").parts()
    other = chat.invoke(QUESTION, {"configurable": {"reward_model": reward_b}}).response_metadata
    assert other["reward_model"] == "tiny-b" and {e["reward_model"] for e in other["ggro_interventions"]} == {"tiny-b"}
    greedy = chat.invoke(QUESTION, {"configurable": {"strategy": "greedy"}})
    assert greedy.response_metadata["strategy"] == "greedy" and greedy.response_metadata["ggro_interventions"] == []
    with pytest.raises(ConfigError, match="entropy_threshold"):
        chat.invoke(QUESTION, {"configurable": {"entropy_threshold": -1.0}})  # validated like any call option


def test_two_models_in_one_chain_configured_apart(decoder):
    first = ChatGGRO(decoder=decoder, configurable_prefix="first_")
    second = ChatGGRO(decoder=decoder, configurable_prefix="second_")
    handler = GGROInterventionHandler()
    starts: list[Any] = []

    class Order(BaseCallbackHandler):
        def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, **kw: Any) -> None:
            starts.append(run_id)

    chain = first | StrOutputParser() | (lambda text: text or QUESTION) | second
    config = {"configurable": {"first_entropy_threshold": 0.2, "second_entropy_threshold": 0.9}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chain.invoke(QUESTION, {**config, "callbacks": [handler, Order()]})
    assert ggro_warnings(caught) == []  # each model's keys are the other's business, not typos
    assert [thresholds(handler.by_run[run]) for run in starts] == [{0.2}, {0.9}]
    ids = {s.id for s in chain.config_specs}
    assert {"first_" + n for n in CONFIGURABLE} | {"second_" + n for n in CONFIGURABLE} <= ids
    schema = chain.config_schema().model_json_schema()["$defs"]["Configurable"]["properties"]
    assert schema["first_entropy_threshold"]["description"] == ChatGGRO.model_fields["entropy_threshold"].description


def test_two_unprefixed_models_declare_compatible_specs(decoder):
    chain = (
        ChatGGRO(decoder=decoder, entropy_threshold=1.0)
        | StrOutputParser()
        | ChatGGRO(decoder=decoder, entropy_threshold=3.0)
    )
    assert {s.id for s in chain.config_specs} == set(CONFIGURABLE)  # equal specs (default None): no conflict


class _State(TypedDict):
    messages: Annotated[list, __import__("langgraph.graph.message", fromlist=["add_messages"]).add_messages]


@pytest.mark.parametrize("passes_config", [True, False])
def test_langgraph_state_graph_node(chat, passes_config):
    pytest.importorskip("langgraph")
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph

    def node_with_config(state: _State, config: RunnableConfig) -> dict[str, Any]:
        return {"messages": [chat.invoke(state["messages"], config)]}

    def node_without_config(state: _State) -> dict[str, Any]:
        return {"messages": [chat.invoke(state["messages"])]}  # the node's config reaches the model anyway

    graph = StateGraph(_State)
    graph.add_node("model", node_with_config if passes_config else node_without_config)
    graph.add_edge(START, "model")
    graph.add_edge("model", END)
    app = graph.compile(checkpointer=InMemorySaver())
    # LangGraph's and the application's own keys next to a GGRO option: no warnings for them.
    configurable = {"entropy_threshold": 0.3, "thread_id": "t1", "checkpoint_ns": "", "user_id": "u", "model": "x"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = app.invoke({"messages": [("human", QUESTION)]}, {"configurable": configurable})
    assert ggro_warnings(caught) == []
    assert thresholds(out["messages"][-1].response_metadata["ggro_interventions"]) == {0.3}


def test_langgraph_prebuilt_agent_with_configured_budget(scripted):
    prebuilt = pytest.importorskip("langgraph.prebuilt")

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    def script(prompt: str) -> str:
        if "<tool_response>" in prompt:
            return "It is 3."
        return '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'

    chat = ChatGGRO(decoder=scripted(script, max_new_tokens=200))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_react_agent is deprecated in favour of langchain's create_agent
        agent = prebuilt.create_react_agent(chat, [add])
    out = agent.invoke({"messages": [("human", "1 + 2?")]}, {"configurable": {"thread_id": "x"}})
    assert [m.content for m in out["messages"] if m.type == "tool"] == ["3"]
    assert out["messages"][-1].content == "It is 3."
    # The same agent with a 3-token budget from the config: the model cannot even finish its tool call.
    out = agent.invoke({"messages": [("human", "1 + 2?")]}, {"configurable": {"max_new_tokens": 3}})
    (answer,) = [m for m in out["messages"] if m.type == "ai"]
    assert answer.usage_metadata["output_tokens"] == 3 and answer.tool_calls == []


@pytest.mark.parametrize(
    "key, hint",
    [
        ("entropy_treshold", "entropy_threshold"),
        ("entropythreshold", "entropy_threshold"),
        ("reward_models", "reward_model"),
        ("num_refinement", "num_refinements"),
        ("nudge_topk", "nudge_top_k"),
        ("max_new_token", "max_new_tokens"),
        ("temprature", "temperature"),
        ("strategey", "strategy"),
        ("nudge_temp", "nudge_temperature"),
        ("entropy", "entropy_threshold"),
        ("nudge_score", "nudge_scoring"),
        ("ggro_mode", None),  # GGRO-looking, close to no option: warns without a guess
    ],
)
def test_a_misspelled_option_warns_with_the_fix(chat, key, hint):
    with pytest.warns(GGROConfigWarning, match=f"key {key!r} is not a GGRO option") as caught:
        chat.invoke(QUESTION, {"configurable": {key: 1}})
    (message,) = ggro_warnings(caught.list)
    assert (f"Did you mean {hint!r}?" in message) if hint else ("Did you mean" not in message)


def test_other_runnables_keys_do_not_warn(chat):
    keys = {
        "thread_id": "t",
        "checkpoint_ns": "",
        "checkpoint_id": "c",
        "user_id": "u",
        "model": "gpt-x",
        "llm": "openai",
        "k": 4,
        "top_k": 5,
        "search_kwargs": {},
        "__pregel_send": None,
        "session_id": "s",
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        readme_chain(chat).invoke({"question": QUESTION}, {"configurable": keys})
        RunnableLambda(lambda x: chat.invoke(x)).invoke(QUESTION, {"configurable": keys})
    assert ggro_warnings(caught) == []


def test_a_prefixed_model_reports_a_key_meant_for_it(decoder):
    chat = ChatGGRO(decoder=decoder, configurable_prefix="chat_")
    with pytest.warns(GGROConfigWarning, match="Did you mean 'chat_entropy_threshold'"):
        chat.invoke(QUESTION, {"configurable": {"chat_entropy_treshold": 0.2}})


def test_a_prefix_no_model_uses_warns(chat):
    with pytest.warns(GGROConfigWarning, match="key 'llm_entropy_threshold'.*Did you mean 'entropy_threshold'"):
        chat.invoke(QUESTION, {"configurable": {"llm_entropy_threshold": 0.2}})


def test_configurable_ggro_is_a_deprecated_prefixed_copy(decoder):
    chat = ChatGGRO(decoder=decoder)
    with pytest.warns(DeprecationWarning, match="configurable_ggro"):
        copy = configurable_ggro(chat, prefix="c_")
    assert isinstance(copy, ChatGGRO) and copy.configurable_prefix == "c_" and copy.decoder is decoder
    events = copy.invoke(QUESTION, {"configurable": {"c_entropy_threshold": 0.2}}).response_metadata
    assert thresholds(events["ggro_interventions"]) == {0.2}
    llm = GGROLLM(decoder=decoder)
    with pytest.warns(DeprecationWarning):
        assert isinstance(configurable_ggro(llm), GGROLLM)
