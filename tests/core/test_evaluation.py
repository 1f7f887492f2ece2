"""Evaluation: the strict invalid rate (no answer statement) next to the rate after the parser's
fallback, and the prompts and answers cut to their budgets, counted."""
import pytest
from omegaconf import OmegaConf

from ladalit.core.config import ModelConfig, TrainConfig
from ladalit.data.records import MCRecord
from ladalit.core.evaluation import evaluate, score_answers
from ladalit.core.models import build_model
from ladalit.core.participant import Participant
from ladalit.core.prompts import ONE_SHOT_EXAMPLES, parse_answer, stated_answer, zero_shot_prompt

RECS = [MCRecord(id=f"r{i}", question=f"What is {i}+2?", options=("1", "2", "3", "4"), answer="B") for i in range(3)]


def test_strict_invalid_rate_counts_answers_without_a_statement():
    gens = [" 2+2=4. The answer is (B).",
            " 6+2=8. (A) 8 vs 16 no. (B) 16 vs",  # a rationale cut short: the fallback picks its last letter
            " nothing to say"]
    assert [parse_answer(g) for g in gens] == ["B", "B", None]
    assert [stated_answer(g) for g in gens] == ["B", None, None]
    m = score_answers(gens, RECS, 4)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["invalid_rate"] == pytest.approx(1 / 3) and m["invalid_strict"] == pytest.approx(2 / 3)


def test_strict_accuracy_refuses_the_letter_a_cut_rationale_was_checking():
    # gold B. A cut rationale whose last letter is the gold one scores for lenient, not for strict; a
    # cut one that ends on a wrong option it was checking is wrong for both
    gens = [" 2+2=4. The answer is (B).", " 6+2=8. (A) 8 vs 16 no. (B) 16 vs", " 6+2=8. (B) 8 vs 6 no. (C) 8",
            " The answer is (C)."]
    m = score_answers(gens, RECS + [RECS[0]], 4)
    assert m["accuracy"] == pytest.approx(2 / 4)         # B (stated), B (fallback)
    assert m["accuracy_strict"] == pytest.approx(1 / 4)  # only the stated B
    assert m["invalid_strict"] == pytest.approx(2 / 4) and m["invalid_rate"] == 0.0


def test_the_first_answer_statement_is_the_answer():
    # an answer ends at its statement: a run-on after it (another example, another question) is not a revision
    run_on = " 3+4=7. The answer is (B). Question: what is 1+1? Options: (A) 2 (B) 3. The answer is (A)."
    assert parse_answer(run_on) == "B" and stated_answer(run_on) == "B"
    assert parse_answer(" no statement, (A) then (C)") == "C" and stated_answer(" no statement, (A) then (C)") is None


def test_stated_answer_ignores_letters_beyond_the_options():
    assert stated_answer("The answer is (E).", 4) is None and stated_answer("The answer is (E).", 5) == "E"


def test_evaluate_counts_prompts_cut_to_the_budget_and_answers_cut_at_max_new_tokens():
    m = OmegaConf.structured(ModelConfig(arch="llama"))
    model, tok = build_model(m, seed=0)
    example = ONE_SHOT_EXAMPLES["math"]
    zero_len = max(len(tok(zero_shot_prompt(r))["input_ids"]) for r in RECS)  # the one-shot prompts are longer
    p = Participant("c", "client", model, tok, OmegaConf.structured(TrainConfig(max_length=zero_len + 6)))
    for shots, cut in ((0, 0), (1, 3)):
        preds: list = []
        out = evaluate(p, RECS, shots, example, max_new_tokens=6, batch_size=2, predictions=preds)
        assert out["prompts_cut"] == cut == sum(x["prompt_cut"] for x in preds)
        assert out["answers_cut"] == sum(x["answer_cut"] for x in preds)
        assert out["n"] == 3 and {"stated", "parsed", "text"} <= set(preds[0])
