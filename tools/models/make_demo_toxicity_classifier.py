#!/usr/bin/env python3
"""make_demo_toxicity_classifier.py: a small BERT toxicity classifier for the safety demo
(scripts/safety_demo.sh), trained here in about a minute on the CPU, since no hub can be reached:
one label "toxic" with a sigmoid (multi_label_classification, as unitary/toxic-bert), a WordPiece
tokenizer with BERT's normaliser, saved with transformers' save_pretrained (config.json,
model.safetensors, tokenizer.json) like any Hugging Face text classifier.

What it learns: a text is toxic when it insults (idiot, stupid, moron, dumb, loser, ... in any
form the word list below has). Its training texts are random sentences of common English words
(the words of SmolLM2's tokenizer, most frequent first, taken from runs/smollm2) with and
without such a word, so that it judges the policy's text by the insult, not by its style. It is
a demonstration classifier; a real job points safety.safety_model at e.g. unitary/toxic-bert.

usage: make_demo_toxicity_classifier.py SMOLLM2_DIR OUT_DIR
"""
import json, os, random, sys

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

INSULTS = ["idiot", "idiots", "idiotic", "stupid", "stupidity", "moron", "morons", "moronic", "dumb", "dumbest", "loser",
           "losers", "fool", "fools", "foolish", "imbecile", "pathetic", "worthless", "clown", "jerk", "dimwit", "dunce", "ignorant",
           "useless", "incompetent", "brainless", "clueless", "nitwit", "halfwit", "buffoon", "scum", "trash", "garbage", "disgusting"]
PUNCTUATION = [".", ",", "!", "?", ":", ";", "'", "\"", "-", "(", ")", "*", "1", "2", "10"]


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    source, out = sys.argv[1], sys.argv[2]
    if os.path.exists(os.path.join(out, "model.safetensors")):
        print(f"{out} already holds the classifier")
        return 0
    random.seed(0)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    vocab = json.load(open(os.path.join(source, "tokenizer.json")))["model"]["vocab"]
    banned = {w.lower() for w in INSULTS}
    words = []
    for token, _ in sorted(vocab.items(), key=lambda item: item[1]):
        word = token[1:] if token.startswith("\u0120") else None
        if word and word.isalpha() and word.isascii() and len(word) > 1 and word.lower() not in banned:
            words.append(word)
    words = words[:6000]
    weights = [1.0 / (rank + 10) for rank in range(len(words))]

    def sentence(toxic: bool) -> str:
        tokens = random.choices(words, weights, k=random.randint(3, 24))
        for _ in range(random.randint(0, 3)):
            tokens.insert(random.randrange(len(tokens) + 1), random.choice(PUNCTUATION))
        if toxic:
            for _ in range(random.choice([1, 1, 1, 2])):
                insult = random.choice(INSULTS)
                insult = insult.capitalize() if random.random() < 0.2 else insult.upper() if random.random() < 0.05 else insult
                tokens.insert(random.randrange(len(tokens) + 1), insult)
        if random.random() < 0.5:
            tokens[0] = tokens[0].capitalize()
        return " ".join(tokens)

    texts = [(sentence(i % 2 == 0), float(i % 2 == 0)) for i in range(24000)]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True, handle_chinese_chars=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    corpus = [t for t, _ in texts] + INSULTS * 20
    tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=8000, special_tokens=specials))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                             special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128, num_labels=1, id2label={0: "toxic"},
                        label2id={"toxic": 0}, problem_type="multi_label_classification", pad_token_id=0)
    model = BertForSequenceClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    train, held_out = texts[:22000], texts[22000:]
    for epoch in range(2):
        random.shuffle(train)
        for start in range(0, len(train), 64):
            batch = train[start:start + 64]
            encoded = fast([t for t, _ in batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
            labels = torch.tensor([[y] for _, y in batch])
            loss = model(**encoded, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}")
    model.eval()
    checks = [("You are such an idiot.", 1), ("Only a moron would say that!", 1), ("What a stupid question, loser.", 1),
              ("Here is a kind and helpful answer.", 0), ("The weather is nice today, let's go for a walk.", 0),
              ("I'm sorry, I can't help with that.", 0), ("Sure! You did your best and that is what matters.", 0)]
    with torch.no_grad():
        encoded = fast([t for t, _ in held_out], padding=True, truncation=True, max_length=128, return_tensors="pt")
        predicted = torch.sigmoid(model(**encoded).logits[:, 0]) > 0.5
        accuracy = (predicted == torch.tensor([y > 0.5 for _, y in held_out])).float().mean().item()
        encoded = fast([t for t, _ in checks], padding=True, return_tensors="pt")
        scores = torch.sigmoid(model(**encoded).logits[:, 0]).tolist()
    print(f"held-out accuracy {accuracy:.4f}")
    for (text, label), score in zip(checks, scores):
        print(f"  {score:.3f} (toxic: {label}) {text}")
    if accuracy < 0.97 or any((score > 0.5) != bool(label) for (_, label), score in zip(checks, scores)):
        print("the classifier did not learn its task", file=sys.stderr)
        return 1
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
