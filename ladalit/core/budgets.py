"""Token budgets in each participant's own tokens, checked at the start of a run.

A participant generates at most `max_new_tokens` tokens after a prompt of at most
`train.max_length − max_new_tokens` (generation.* for the exchanged answers, eval.* for evaluation).
One budget in tokens means different lengths of text for different tokenizers (a character-level
client needs several times the tokens of a BPE one), so each participant is checked in its own
tokens against:

- a full answer: the longest reference response " {rationale} The answer is (X)." plus EOS, over
  the one-shot worked example and every record of the data set that carries a rationale (before the
  split removes them);
- the longest zero-shot prompt it is prompted with: D_p for everyone, its own test set (the server:
  all of them).

A budget that does not fit fails the run with one line naming the participant and the length it
needs (`generation.check_budgets=false` turns the check off, e.g. for untrained tiny models whose
answers never end). One-shot prompts are not required to fit: they lose the start of their worked
example (`Participant.cut_left`), counted as `prompts_cut` in results.json.
"""
from __future__ import annotations

from ladalit.core.config import ConfigError
from ladalit.core.prompts import format_response, zero_shot_prompt
from ladalit.core.experiment import load_records


def reference_responses(cfg, example) -> list[str]:
    """Full answers in the response format: the worked example's and those of the data's rationales."""
    out = [format_response(example.rationale, example.answer)]
    out += [format_response(r.rationale, r.answer) for r in load_records(cfg) if r.rationale and r.answer]
    return out


def longest(tokenizer, texts: list[str], special: bool) -> int:
    if not texts:
        return 0
    return max(len(x) for x in tokenizer(list(texts), add_special_tokens=special)["input_ids"])


def needs(participant, prompts: list[str], responses: list[str]) -> tuple[int, int]:
    """(the longest prompt, a full answer with EOS) in the participant's own tokens."""
    tok = participant.tokenizer
    answer = longest(tok, responses, special=False) + (tok.eos_token_id is not None)
    return longest(tok, prompts, special=True), answer


def check_budgets(exp) -> None:
    """Raise ConfigError (one line, naming the participant) when a budget does not fit; see the module."""
    cfg = exp.cfg
    if not cfg.generation.check_budgets:
        return
    responses = reference_responses(cfg, exp.example)
    public = [zero_shot_prompt(x) for x in exp.data.public]
    tests = {k: [zero_shot_prompt(x) for x in exp.data.clients[i].test[: cfg.eval.limit]]
             for i, k in enumerate(exp.clients)}
    parts = [("server", exp.server, public + [p for v in tests.values() for p in v])]
    parts += [(f"clients.{k}", c, public + tests[k]) for k, c in exp.clients.items()]
    for key, p, prompts in parts:
        prompt, answer = needs(p, prompts, responses)
        for budget, n in (("generation.max_new_tokens", cfg.generation.max_new_tokens),
                          ("eval.max_new_tokens", cfg.eval.max_new_tokens)):
            if n < answer:
                raise ConfigError(f"{key}: a full answer needs {answer} of its tokens, but {budget} is {n} "
                                  f"(set {budget}>={answer}, or generation.check_budgets=false)")
        n = max(cfg.generation.max_new_tokens, cfg.eval.max_new_tokens)
        if p.train_cfg.max_length < prompt + n:
            raise ConfigError(f"{key}: train.max_length {p.train_cfg.max_length} must hold the longest zero-shot "
                              f"prompt ({prompt} of its tokens) and {n} new tokens: set {key}.train.max_length>="
                              f"{prompt + n}")
