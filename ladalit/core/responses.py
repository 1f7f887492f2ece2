"""Reasoning answers of one participant to public questions, generated once per (round, participant, sample)."""
from __future__ import annotations

from ladalit.core.channel import Channel
from ladalit.core.prompts import CutAnswer, zero_shot_prompt
from ladalit.core.progress import Progress


class ResponseCache:
    """Reasoning answers, generated once per (round, model, sample) in one batched call.

    `generators` (generation.backend=vllm): participant name -> ladalit.scale.vllm_backend.VLLMGenerator;
    without one a participant generates with HF `generate_text`.

    `mark_cut`: answers cut at max_new_tokens come back as `CutAnswer` (LaDa's loss appends no EOS to
    them; they cross the channel with `send_answers`); otherwise as plain text."""

    def __init__(self, max_new_tokens: int, batch_size: int, progress=None, generators: dict | None = None,
                 mark_cut: bool = False):
        self.max_new_tokens, self.batch_size, self.mark_cut = max_new_tokens, batch_size, mark_cut
        self.cache: dict[tuple[int, str, str], str] = {}  # an answer cut at max_new_tokens is a CutAnswer
        self.prompt_cut: dict[tuple[int, str, str], bool] = {}
        self.generated = 0
        self.progress = progress or Progress(quiet=True)
        self.generators = generators or {}

    def get(self, round: int, participant, samples) -> list[str]:
        missing = [x for x in dict.fromkeys(samples, None) if (round, participant.name, x.id) not in self.cache]
        if missing:
            prompts = [zero_shot_prompt(x) for x in missing]
            cut: list[bool] = []
            with self.progress.task(f"generate {participant.name}", len(missing)) as bar:
                if participant.name in self.generators:
                    texts = self.generators[participant.name].generate(participant, prompts, self.max_new_tokens, cut)
                else:
                    texts = participant.generate_text(prompts, self.max_new_tokens, self.batch_size, cut=cut)
                bar.advance(len(missing))
            _, prompt_cut = participant.prompt_ids(prompts, self.max_new_tokens)
            for x, y, c, pc in zip(missing, texts, cut, prompt_cut):
                self.cache[(round, participant.name, x.id)] = CutAnswer(y) if c else y
                self.prompt_cut[(round, participant.name, x.id)] = pc
            self.generated += len(missing)
        answers = [self.cache[(round, participant.name, x.id)] for x in samples]
        return answers if self.mark_cut else [str(y) for y in answers]

    def rows(self, round: int) -> list[dict]:
        return [{"round": r, "participant": p, "id": i, "text": y, "cut": isinstance(y, CutAnswer)}
                for (r, p, i), y in self.cache.items() if r == round]

    def cut_counts(self, round: int) -> dict[str, dict]:
        """Per participant: answers generated in `round`, prompts cut to the budget, answers cut at max_new_tokens."""
        out: dict[str, dict] = {}
        for (r, p, i), y in self.cache.items():
            if r == round:
                c = out.setdefault(p, {"n": 0, "prompts_cut": 0, "answers_cut": 0})
                c["n"] += 1
                c["prompts_cut"] += self.prompt_cut[(r, p, i)]
                c["answers_cut"] += isinstance(y, CutAnswer)
        return out

    def forget(self, round: int, participant: str, ids) -> None:
        """Drop these answers of `round` (generated ahead of need; generated again when asked for)."""
        for i in ids:
            self.cache.pop((round, participant, i), None)
            self.prompt_cut.pop((round, participant, i), None)

    def state_dict(self) -> dict:
        """The cached answers (for a client whose process ends between messages: ladalit.federation.site)."""
        return {"cache": [[*k, str(y), isinstance(y, CutAnswer), self.prompt_cut[k]] for k, y in self.cache.items()],
                "generated": self.generated}

    def load_state_dict(self, state: dict) -> None:
        self.cache = {(r, p, i): CutAnswer(y) if c else y for r, p, i, y, c, _ in state["cache"]}
        self.prompt_cut = {(r, p, i): pc for r, p, i, _, _, pc in state["cache"]}
        self.generated = state["generated"]

    def drop_before(self, round: int) -> None:
        self.cache = {k: v for k, v in self.cache.items() if k[0] >= round}
        self.prompt_cut = {k: v for k, v in self.prompt_cut.items() if k[0] >= round}


def send_answers(channel: Channel, round: int, direction: str, client: str, kind: str, answers: list[str]) -> list[str]:
    """Reasoning answers through the channel: their texts and which of them were cut at max_new_tokens
    (the receiver's loss appends no EOS to those)."""
    got = channel.send(round, direction, client, kind,
                       {"texts": [str(y) for y in answers],
                        "cut": [i for i, y in enumerate(answers) if isinstance(y, CutAnswer)]})
    cut = set(got["cut"])
    return [CutAnswer(y) if i in cut else y for i, y in enumerate(got["texts"])]
