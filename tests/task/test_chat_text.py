"""The one chat rendering (``task.prompts.chat_text``): what the engines tokenise and the
benchmarks' peers read, for models with a chat template and for plain ones."""
from __future__ import annotations

from transformers import AutoTokenizer

from softverify.engines.hf import HFEngine
from softverify.task.prompts import DIRECT_SYSTEM_PROMPT, chat_text, row_messages


def test_chat_text_is_the_template_with_the_turn_opened_then_the_prefix(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    msgs = row_messages({"question": "Is a knockdown of A in K562 likely to change B?"}, DIRECT_SYSTEM_PROMPT)
    plain = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert chat_text(tok, msgs) == plain
    assert chat_text(tok, msgs, "<answer>") == plain + "<answer>"
    assert plain.rstrip().endswith("assistant")  # SmolLM2's template opens the assistant turn
    # the engine tokenises exactly that text
    engine = HFEngine(str(tiny_model_dir))
    batch = engine.render([msgs])
    assert batch.texts == [plain]
    assert batch.token_ids[0] == tok(plain, add_special_tokens=False)["input_ids"]


def test_a_plain_model_without_a_template_gets_one_message_a_line(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
    assert chat_text(tok, msgs, "A:") == "S\nQ?\nA:"
