"""data_peer.py: the peer side of data_peer_test: TRL 1.x and transformers on the same rows.

Usage: data_peer.py FIXTURE_TOKENIZER_JSON OUT_DIR
Writes into OUT_DIR two tokenizer directories (the fixture tokenizer.json with the chatml tokens
added, and a tokenizer_config.json carrying the chatml or the llama3 template), the JSONL files of
each case, and expected.json: transformers' apply_chat_template strings and, for every case, the
token ids and prompt lengths TRL's DPOTrainer / KTOTrainer / SFTTrainer data preparation and
collators give (one example at a time, so no padding).
"""
import json
import os
import sys
import types

os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from datasets import Dataset  # noqa: E402
from tokenizers import AddedToken, Tokenizer  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from trl.trainer.dpo_trainer import DataCollatorForPreference, DPOTrainer  # noqa: E402
from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference, KTOTrainer  # noqa: E402
from trl.trainer.sft_trainer import SFTTrainer  # noqa: E402

# The Jinja sources as the models ship them (Qwen-style ChatML; Meta-Llama-3-8B-Instruct).
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
TEMPLATES = {"chatml": CHATML, "llama3": LLAMA3}


def make_tokenizer_dirs(fixture, out):
    tokenizer = Tokenizer.from_file(fixture)
    tokenizer.add_special_tokens([AddedToken("<|im_start|>", special=True), AddedToken("<|im_end|>", special=True)])
    dirs = {}
    for name, template in TEMPLATES.items():
        directory = os.path.join(out, "tokenizer_" + name)
        os.makedirs(directory, exist_ok=True)
        tokenizer.save(os.path.join(directory, "tokenizer.json"))
        with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
                       "eos_token": "<|end_of_text|>", "pad_token": None, "chat_template": template}, f)
        dirs[name] = directory
    return dirs


def conversation(*turns):
    return [{"role": role, "content": content} for role, content in turns]


TEMPLATE_CASES = [
    conversation(("user", "Hi")),
    conversation(("system", "Be brief.\n"), ("user", "  What is 2+2?  "), ("assistant", "4")),
    conversation(("user", "\u3000wide space\u2003"), ("assistant", " tab\t"), ("user", "next\n\nturn")),
    conversation(("user", "")),
    conversation(("user", "caf\u00e9 \u2014 \U0001F600"), ("assistant", "ok")),
]

TEXT_PREFERENCE = [
    {"prompt": "What is 2+2?", "chosen": " 4", "rejected": " 5"},
    {"prompt": "Name a colour:", "chosen": " blue, like the sky on a clear day", "rejected": " 7"},
    {"prompt": "Write a long answer.", "chosen": " " + "very " * 60 + "long.", "rejected": " short."},
    {"prompt": "Say it  twice", "chosen": "  twice twice", "rejected": "\nno"},
    {"prompt": "Unicode \u00e9\u00e8 \U0001F600 ", "chosen": "\u4f60\u597d", "rejected": "\u0645\u0631\u062d\u0628\u0627"},
]
# TRL decides explicit or implicit prompts per data set (from its first row), so these are apart.
TEXT_IMPLICIT = [
    {"chosen": "The sky is blue.", "rejected": "The sky is green."},
    {"chosen": "Q: capital of France? A: Paris", "rejected": "Q: capital of France? A: Rome"},
    {"chosen": "x \u00e9t\u00e9", "rejected": "x \u00e8re"},
]

CHAT_PREFERENCE = [
    {"prompt": conversation(("user", "Sky colour?")), "chosen": conversation(("assistant", "Blue.")),
     "rejected": conversation(("assistant", "Green."))},
    {"prompt": conversation(("system", "You are terse."), ("user", " 2+2? ")),
     "chosen": conversation(("assistant", " 4 ")), "rejected": conversation(("assistant", "five"))},
]
CHAT_IMPLICIT = [
    {"chosen": conversation(("user", "Hello"), ("assistant", "Hi there")),
     "rejected": conversation(("user", "Hello"), ("assistant", "Go away"))},
    {"chosen": conversation(("system", "S"), ("user", "U"), ("assistant", "A1"), ("user", "again"), ("assistant", "B")),
     "rejected": conversation(("system", "S"), ("user", "U"), ("assistant", "A1"), ("user", "again"), ("assistant", "C"))},
]

KTO_ROWS = [
    {"prompt": "What is 2+2?", "completion": " 4", "label": True},
    {"prompt": "What is 2+2?", "completion": " 5", "label": False},
    {"prompt": "Long prompt " * 5, "completion": " " + "word " * 40, "label": True},
]

SFT_ROWS = [
    {"text": "Once upon a time there was a tiny model."},
    {"prompt": "Translate to French: cat", "completion": " chat"},
    {"text": "A long text " + "again and again " * 30},
]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def prompt_length(mask):
    return next((i for i, bit in enumerate(mask) if bit), len(mask))


def dpo_expected(tokenizer, rows, max_length, truncation_mode):
    trainer = types.SimpleNamespace(_tokenizer=tokenizer)
    args = types.SimpleNamespace(dataset_num_proc=None, max_length=max_length, truncation_mode=truncation_mode)
    dataset = DPOTrainer._prepare_dataset(trainer, Dataset.from_list(rows), tokenizer, args, "train")
    collator = DataCollatorForPreference(pad_token_id=0, max_length=max_length, truncation_mode=truncation_mode)
    expected = []
    for example in dataset:
        batch = collator([{k: example[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}])
        sequences = []
        for row in range(2):
            mask = batch["attention_mask"][row].tolist()
            length = sum(mask)
            sequences.append({"ids": batch["input_ids"][row].tolist()[:length],
                              "prompt_length": prompt_length(batch["completion_mask"][row].tolist()[:length])})
        expected.append({"sequences": sequences})
    return expected


def kto_expected(tokenizer, rows, max_length):
    trainer = types.SimpleNamespace(_tokenizer=tokenizer, calculate_KL=False)
    args = types.SimpleNamespace(dataset_num_proc=None, max_length=max_length)
    dataset = KTOTrainer._prepare_dataset(trainer, Dataset.from_list(rows), tokenizer, args, "eval")
    collator = DataCollatorForUnpairedPreference(pad_token_id=0, max_length=max_length)
    expected = []
    for example in dataset:
        batch = collator([{"prompt_ids": example["prompt_ids"], "completion_ids": example["completion_ids"],
                           "label": example["label"]}])
        length = sum(batch["attention_mask"][0].tolist())
        expected.append({"label": bool(example["label"]), "sequences": [{
            "ids": batch["input_ids"][0].tolist()[:length],
            "prompt_length": prompt_length(batch["completion_mask"][0].tolist()[:length])}]})
    return expected


def sft_expected(tokenizer, rows, max_length, truncation_mode):
    trainer = types.SimpleNamespace(_tokenizer=tokenizer, completion_only_loss=True, chat_template=None)
    args = types.SimpleNamespace(dataset_num_proc=None, max_length=max_length, truncation_mode=truncation_mode,
                                 dataset_text_field="text", assistant_only_loss=False, shuffle_dataset=False,
                                 packing_strategy="bfd", seed=0)
    expected = []
    for row in rows:  # one at a time: text and prompt/completion rows cannot share a Dataset
        dataset = SFTTrainer._prepare_dataset(trainer, Dataset.from_list([row]), tokenizer, args, False, None, "train")
        for example in dataset:
            labels = example["labels"]
            expected.append({"sequences": [{"ids": example["input_ids"],
                                            "prompt_length": prompt_length([label != -100 for label in labels])}]})
    return expected


def main():
    fixture, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    dirs = make_tokenizer_dirs(fixture, out)
    tokenizers = {name: AutoTokenizer.from_pretrained(directory) for name, directory in dirs.items()}
    result = {"tokenizers": dirs, "templates": [], "cases": []}
    for name, tokenizer in tokenizers.items():
        for messages in TEMPLATE_CASES:
            for generation in (False, True):
                text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
                result["templates"].append({"template": name, "messages": messages, "add_generation_prompt": generation,
                                            "text": text})

    def case(name, kind, template, rows, max_length, truncation_mode, expected):
        path = os.path.join(out, name + ".jsonl")
        write_jsonl(path, rows)
        result["cases"].append({"name": name, "kind": kind, "template": template, "jsonl": path,
                                "tokenizer": dirs[template or "llama3"], "max_length": max_length,
                                "truncation_mode": truncation_mode, "expected": expected})

    text_tokenizer = tokenizers["llama3"]
    for max_length, mode in ((1024, "keep_start"), (24, "keep_start"), (24, "keep_end")):
        case(f"dpo_text_{max_length}_{mode}", "preference", "", TEXT_PREFERENCE, max_length, mode,
             dpo_expected(text_tokenizer, TEXT_PREFERENCE, max_length, mode))
    case("dpo_text_implicit", "preference", "", TEXT_IMPLICIT, 1024, "keep_start",
         dpo_expected(text_tokenizer, TEXT_IMPLICIT, 1024, "keep_start"))
    for name in ("chatml", "llama3"):
        case(f"dpo_chat_{name}", "preference", name, CHAT_PREFERENCE, 1024, "keep_start",
             dpo_expected(tokenizers[name], CHAT_PREFERENCE, 1024, "keep_start"))
        case(f"dpo_chat_implicit_{name}", "preference", name, CHAT_IMPLICIT, 1024, "keep_start",
             dpo_expected(tokenizers[name], CHAT_IMPLICIT, 1024, "keep_start"))
    for max_length in (1024, 30):
        case(f"kto_{max_length}", "unpaired", "", KTO_ROWS, max_length, "keep_start",
             kto_expected(text_tokenizer, KTO_ROWS, max_length))
    for max_length, mode in ((1024, "keep_start"), (20, "keep_start"), (20, "keep_end")):
        case(f"sft_{max_length}_{mode}", "sft", "", SFT_ROWS, max_length, mode,
             sft_expected(text_tokenizer, SFT_ROWS, max_length, mode))
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
