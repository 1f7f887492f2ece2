"""The private-train SFT's pairs (prompts.private_sft_pairs): the direct-answer prompt by default, the
step-by-step prompt behind sft_prompt=cot."""
import pytest

from ladalit.core.prompts import private_sft_pairs
from ladalit.data.records import MCRecord

REC = MCRecord(id="r1", question="Tom has 6 apples. He doubles them. How many apples now?",
               options=("12", "6", "8", "3"), answer="A", rationale="6*2=12.")


def test_direct_pairs_ask_for_the_answer_without_steps():
    prompts, responses = private_sft_pairs([REC])
    assert prompts == ["Question: Tom has 6 apples. He doubles them. How many apples now?\n"
                       "Options: (A) 12 (B) 6 (C) 8 (D) 3\nAnswer:"]
    assert responses == [" The answer is (A)."]  # the short answer statement: the rationale is not private data


def test_cot_pairs_keep_the_step_by_step_prompt():
    prompts, responses = private_sft_pairs([REC], "cot")
    assert prompts == ["Question: Tom has 6 apples. He doubles them. How many apples now?\n"
                       "Options: (A) 12 (B) 6 (C) 8 (D) 3\nAnswer: Let's think step by step."]
    assert responses == [" The answer is (A)."]


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="sft_prompt"):
        private_sft_pairs([REC], "fewshot")
