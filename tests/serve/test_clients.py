"""A second real client: LangChain's ChatOpenAI against the plain proxy, one chat and one
streamed chat, both equal to the plain API's answer."""

from __future__ import annotations

from langchain_openai import ChatOpenAI

MODEL = "smollm2-135m"
QUESTION = "What is the capital of France?"


def test_langchain_chat_and_stream(plain_proxy, smollm):
    want = smollm.generate(QUESTION, max_new_tokens=12).text
    llm = ChatOpenAI(
        model=MODEL, base_url=plain_proxy.v1, api_key="local", max_tokens=12, temperature=0,
        max_retries=0,
    )  # fmt: skip
    assert llm.invoke(QUESTION).content == want
    assert "".join(chunk.content for chunk in llm.stream(QUESTION)) == want
