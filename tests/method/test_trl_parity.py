"""The MARD loss equals TRL's DPOTrainer loss (sigmoid, same β) for the same tiny model, LoRA adapter and batch.

Both sides see the same token sequences (asserted): the tokenizer is a BPE
trained here, with a BOS template, so that TRL's tokenisation (prompt alone,
prompt+completion+EOS text, split where they diverge) and the participant's
(prompt with special tokens, response without, EOS id appended) coincide.
The server convention (policy = base + adapter, reference = base with the
adapter disabled) is the one TRL uses for a `peft_config` without `ref_model`.
The batch packs several pairs into one row on the ladalit side (asserted),
while TRL pads every sequence to its own row: equality also checks the packing.
"""
import copy
import math

import pytest
import torch
from omegaconf import OmegaConf

from ladalit.core.config import LoraConfig, ModelConfig, TrainConfig
from ladalit.method.losses import mard_loss
from ladalit.core.models import build_model
from ladalit.core.participant import Participant, _first_fit_decreasing

BETA = 0.1
PROMPTS = ["the cat sat on the mat . what did the cat do ?", "two plus three is",
           "name a colour :", "is the sky blue ?"]
CHOSEN = [" the cat sat on the mat , then it slept on the mat", " five", " red", " yes , the sky is blue"]
REJECTED = [" it ran", " six , because two and three make six", " the colour is blue", " no"]
CORPUS = PROMPTS + CHOSEN + REJECTED + ["the dog ran to the red mat and sat . two and two make four ."] * 3


def bpe_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=160, special_tokens=specials))
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tk.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny_qwen3(tok):
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.for_model("qwen3", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, intermediate_size=128, head_dim=16, vocab_size=len(tok),
                                  pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
                                  initializer_range=0.2)  # peaked enough for the adapter to move the loss
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def trl_trainer(model, tok, precompute: bool, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig as PeftLoraConfig
    from trl import DPOConfig, DPOTrainer
    args = DPOConfig(output_dir=str(tmp_path), beta=BETA, loss_type=["sigmoid"],
                     per_device_train_batch_size=len(PROMPTS),
                     precompute_ref_log_probs=precompute, use_cpu=True, bf16=False, gradient_checkpointing=False,
                     report_to="none", save_strategy="no", disable_tqdm=True, seed=0)
    data = Dataset.from_dict({"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED})
    peft_config = PeftLoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    return DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config)


@pytest.mark.parametrize("precompute", [False, True])
def test_mard_loss_equals_trl_dpo_sigmoid_loss(precompute, tmp_path):
    tok = bpe_tokenizer()
    base = tiny_qwen3(tok)
    trl_model = copy.deepcopy(base)  # the same base weights, wrapped by TRL with its own peft_config
    lora = OmegaConf.structured(LoraConfig(enabled=True, r=4, alpha=8, target_modules=["all-linear"]))
    p = Participant("server", "server", base, tok, OmegaConf.structured(TrainConfig()), lora)
    p.freeze_reference()
    torch.manual_seed(1)
    with torch.no_grad():  # a non-zero adapter: policy ≠ reference
        for n, q in p.model.named_parameters():
            if ".policy." in n and "lora_B" in n:
                q.copy_(0.5 * torch.randn_like(q))

    trainer = trl_trainer(trl_model, tok, precompute, tmp_path)
    theirs = {n.replace(".default.", "."): q for n, q in trainer.model.named_parameters() if ".default." in n}
    mine = {n.replace(".policy.", "."): q for n, q in p.model.named_parameters() if ".policy." in n}
    assert mine.keys() == theirs.keys() and len(mine) == 2 * 7 * 2  # A, B × 7 linear layers × 2 blocks
    with torch.no_grad():
        for n, q in mine.items():
            theirs[n].copy_(q)

    # the same token sequences and the same prompt/response boundary on both sides
    examples = [trainer.train_dataset[i] for i in range(len(PROMPTS))]
    rows = p._rows(PROMPTS * 2, CHOSEN + REJECTED)
    for i, ex in enumerate(examples):
        assert (ex["prompt_ids"], ex["chosen_ids"]) == rows[i]
        assert (ex["prompt_ids"], ex["rejected_ids"]) == rows[len(PROMPTS) + i]
    assert rows[0][0][0] == tok.bos_token_id and all(r[-1] == tok.eos_token_id for _, r in rows)
    lengths = [len(a) + len(b) for a, b in rows]
    n_rows = 1 + max(r for r, _ in _first_fit_decreasing(lengths, max(lengths)))
    assert n_rows <= len(rows) // 2  # several pairs share a row in ladalit's forward pass

    pc, pr = p.pair_logprobs(PROMPTS, CHOSEN, REJECTED)
    rc, rr = p.reference_pair_logprobs(list(range(len(PROMPTS))), PROMPTS, CHOSEN, REJECTED)
    per_pair = mard_loss(pc, pr, rc, rr, BETA)
    ours = per_pair.mean()

    batch = trainer._prepare_inputs(trainer.data_collator(examples))
    assert ("ref_chosen_logps" in batch) == precompute
    trainer.model.train()
    theirs_loss = trainer.compute_loss(trainer.model, batch)
    metrics = trainer._metrics["train"]

    # the adapter matters (policy ≠ reference, loss ≠ log 2), so the comparison below can fail
    assert torch.cat([pc - rc, pr - rr]).abs().max() > 0.3
    assert (per_pair - math.log(2)).abs().max() > 0.05 and abs(ours.item() - math.log(2)) > 1e-3
    assert ours.item() == pytest.approx(theirs_loss.item(), abs=1e-5)
    assert pc.mean().item() == pytest.approx(metrics["logps/chosen"][-1], rel=1e-5)
    assert pr.mean().item() == pytest.approx(metrics["logps/rejected"][-1], rel=1e-5)
    margin = BETA * ((pc - rc) - (pr - rr)).mean().item()
    assert margin == pytest.approx(metrics["rewards/margins"][-1], abs=1e-5)
    # gradients agree too: the same update direction for every adapter weight
    ours.backward()
    theirs_loss.backward()
    for n, q in mine.items():
        torch.testing.assert_close(q.grad, theirs[n].grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ["qwen3", "llama", "gemma2"])
def test_packed_token_logprobs_equal_one_pair_at_a_time(arch):
    """Several pairs packed into one row see only themselves: every response token's log-prob equals the
    one computed for its pair alone (float64 log-softmax of the full logits)."""
    m = OmegaConf.structured(ModelConfig(arch=arch, lora=LoraConfig(enabled=True, r=4)))
    model, tok = build_model(m, seed=0)
    p = Participant("p", "server", model, tok, OmegaConf.structured(TrainConfig()), m.lora)
    torch.manual_seed(0)
    with torch.no_grad():
        for n, q in p.model.named_parameters():
            if "lora_B" in n:
                q.add_(0.2 * torch.randn_like(q))
    prompts = ["Q: " + "x" * (i * 7 % 23) for i in range(6)]
    responses = [" a" * (3 + (i * 13) % 29) for i in range(6)]
    rows = p._rows(prompts, responses)
    lengths = [len(a) + len(b) for a, b in rows]
    assert 1 + max(r for r, _ in _first_fit_decreasing(lengths, max(lengths))) < len(rows)  # packing happens
    grid, mask = p.token_logprobs(prompts, responses)
    seq = p.sequence_logprobs(prompts, responses)
    for i, (a, b) in enumerate(rows):
        with torch.no_grad():
            logits = p.model(input_ids=torch.tensor([a + b])).logits[0].double()
        alone = torch.log_softmax(logits[len(a) - 1:-1], -1).gather(-1, torch.tensor(b)[:, None])[:, 0]
        assert mask[i].nonzero()[:, 0].tolist() == list(range(len(a) - 1, len(a) + len(b) - 1))
        torch.testing.assert_close(grid[i, mask[i]].double(), alone, rtol=1e-5, atol=1e-5)
        assert (grid[i, ~mask[i]] == 0).all()
        assert seq[i].item() == pytest.approx(alone.sum().item(), rel=1e-5)


class _RemoteCodeLM(torch.nn.Module):
    """Stands for a causal LM outside transformers (remote code): plain ids + padding mask only."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_models_outside_transformers_get_the_padded_batch_with_the_same_logprobs():
    m = OmegaConf.structured(ModelConfig(arch="qwen3"))
    model, tok = build_model(m, seed=0)
    p = Participant("p", "client", model, tok, OmegaConf.structured(TrainConfig()))
    prompts = ["Q: " + "x" * (i * 7 % 23) for i in range(6)]
    responses = [" a" * (3 + (i * 13) % 29) for i in range(6)]
    calls = []
    remote = _RemoteCodeLM(p.model)
    remote.register_forward_hook(lambda mod, args, kw, out: calls.append(kw["attention_mask"].shape),
                                 with_kwargs=True)
    with torch.no_grad():
        torch.testing.assert_close(p.sequence_logprobs(prompts, responses, model=remote),
                                   p.sequence_logprobs(prompts, responses), rtol=1e-5, atol=1e-5)
        grid, mask = p.token_logprobs(prompts, responses, model=remote)
        torch.testing.assert_close(grid, p.token_logprobs(prompts, responses)[0] * mask, rtol=1e-5, atol=1e-5)
    assert calls[0][0] == len(prompts)  # one row per pair
