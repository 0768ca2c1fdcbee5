"""Issue 10: whatever a memory, turn or question says, a rendered prompt has exactly the template's
structure: the same messages and roles, the same lines, and (through either backend) the same chat
control tokens as with harmless text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from memory_r1.llm.base import GenerationConfig
from memory_r1.llm.openai_backend import OpenAIGenerator
from memory_r1.prompts import answer, answer_direct, answer_full_context, extract, judge, manage

PIECES = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "system\n", "assistant\n", "\n", "\n\n", "\r\n",
          "\u2028", "[2] ", "[7] (1 May) ", "Memories of Bob:", "Question: ", "Line: ", "Reference answer: ",
          "**Answer:**", "<|start_header_id|>", "<|eot_id|>", "[INST]", "</s>", "ok", " "]
hostile = st.lists(st.sampled_from(PIECES) | st.text(max_size=5), max_size=8).map("".join)


def renders(v: list[str]) -> list[list[dict]]:
    """Every prompt of the project, with the values `v` (8 of them) in every slot a user's text reaches."""
    memories = [(v[0], [answer.format_memory(1, v[1], v[2]), answer.format_memory(2, "", v[3])]), ("Bob", [])]
    return [
        answer.render(v[4], memories),
        answer_direct.render(v[4], memories),
        extract.render(v[5], v[6], v[7]),
        judge.render(v[4], v[5], v[6]),
        manage.render([("0", v[2]), ("1", v[3])], [v[5], v[6]]),
        answer_full_context.render(v[4], answer_full_context.render_session(v[1], [v[5], v[6]])),
    ]


def harmless(values: list[str]) -> list[str]:
    """The same slots filled with plain text (empty where the value was empty: optional lines stay out)."""
    return ["x" if v else "" for v in values]


def skeleton(messages: list[dict]) -> list[tuple[str, int]]:
    """Roles and line counts. Every line break str.splitlines knows counts, except in the manager prompt,
    whose values are JSON strings: there only "\n" is structure (json.dumps escapes it; U+2028 inside a
    JSON string is legal and stays inside that string)."""
    json_prompt = messages[-1]["content"].startswith("Current memories:")
    return [(m["role"], len(m["content"].split("\n") if json_prompt else m["content"].splitlines()))
            for m in messages]


@settings(max_examples=100, deadline=None)
@given(st.lists(hostile, min_size=8, max_size=8))
def test_text_cannot_add_lines_messages_or_headers_to_any_prompt(values):
    for bad, good in zip(renders(values), renders(harmless(values)), strict=True):
        assert skeleton(bad) == skeleton(good)


def special_ids(tokenizer, text: str) -> list[int]:
    special = set(tokenizer.all_special_ids)
    return [i for i in tokenizer(text, add_special_tokens=False)["input_ids"] if i in special]


@settings(max_examples=30, deadline=None)
@given(st.lists(hostile, min_size=8, max_size=8))
def test_transformers_backend_prompt_has_only_the_templates_control_tokens(tiny_generator, values):
    tok = tiny_generator.tokenizer
    for bad, good in zip(renders(values), renders(harmless(values)), strict=True):
        assert special_ids(tok, tiny_generator.render(bad)) == special_ids(tok, tiny_generator.render(good))


@settings(max_examples=30, deadline=None)
@given(st.lists(hostile, min_size=8, max_size=8))
def test_openai_payload_cannot_forge_turns_in_the_servers_template(tiny_generator, values):
    """The server applies its own chat template to our messages; rendered with a ChatML template (as
    vLLM would for SmolLM2 or Qwen), the payload holds only the template's control tokens."""
    client = OpenAIGenerator("m", base_url="http://127.0.0.1:9/v1")
    tok = tiny_generator.tokenizer
    try:
        for bad, good in zip(renders(values), renders(harmless(values)), strict=True):
            sent = client.payload(bad, GenerationConfig())["messages"]
            assert [m["role"] for m in sent] == [m["role"] for m in bad]
            served = tok.apply_chat_template(sent, add_generation_prompt=True, tokenize=False)
            expected = tok.apply_chat_template(good, add_generation_prompt=True, tokenize=False)
            assert special_ids(tok, served) == special_ids(tok, expected)
            assert all(s not in m["content"] for m in sent for s in ("<|eot_id|>", "[INST]", "</s>"))
    finally:
        client.close()


def test_ordinary_text_reaches_the_model_unchanged(tiny_generator):
    messages = extract.render("Caroline: I went to the support group on [1] Monday: it was great!", "May 7")
    assert messages[-1]["content"] in tiny_generator.render(messages)
