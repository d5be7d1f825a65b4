# classifier_peer.py: the peer of classifier_benchmark.cpp: transformers' AutoTokenizer +
# AutoModelForSequenceClassification as its text-classification pipeline runs them (texts in the
# given order, batches padded to their longest, truncation to the model's max length, sigmoid or
# softmax), on the same texts and threads; prints one JSON line.
# Usage: classifier_peer.py MODEL_DIR TEXTS_JSON THREADS BATCH REPEATS
#        classifier_peer.py --make MODEL_DIR TEXTS_JSON COUNT   (a random bert-base classifier with
#        toxic-bert's six labels and a 30522-token WordPiece vocabulary trained on the Python
#        standard library, and COUNT texts of 3 to 300 words)
import glob, json, os, random, sys, time

import torch


def make(directory, texts_path, count):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification
    corpus = []
    for p in sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))[:150]:
        corpus += open(p, encoding="utf-8", errors="ignore").read().splitlines()
    t = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    t.normalizer = normalizers.BertNormalizer(lowercase=True)
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    t.decoder = decoders.WordPiece()
    t.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=30522, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                                                            show_progress=False))
    t.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                     special_tokens=[("[CLS]", t.token_to_id("[CLS]")), ("[SEP]", t.token_to_id("[SEP]"))])
    labels = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=30522, num_labels=6, problem_type="multi_label_classification",
                                                     id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}))
    model.eval().save_pretrained(directory)
    t.save(os.path.join(directory, "tokenizer.json"))
    json.dump(dict(tokenizer_class="BertTokenizer", model_max_length=512, do_lower_case=True, unk_token="[UNK]", sep_token="[SEP]",
                   pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]"), open(os.path.join(directory, "tokenizer_config.json"), "w"))
    words = [w for line in corpus[:20000] for w in line.split() if w.isalpha()]
    rng = random.Random(1)
    texts = [" ".join(rng.choice(words) for _ in range(rng.choice([3, 8, 15, 30, 60, 120, 300]))) for _ in range(count)]
    json.dump(texts, open(texts_path, "w"))


def main():
    if sys.argv[1] == "--make":
        make(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    directory, texts_path, threads, batch, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(threads)
    texts = json.load(open(texts_path))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory, dtype=torch.float32).eval()
    sigmoid = model.config.problem_type == "multi_label_classification" or model.config.num_labels == 1

    def run():
        scores = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch):
                enc = tokenizer(texts[start:start + batch], truncation=True, padding=True, return_tensors="pt")
                logits = model(**enc).logits.float()
                scores.append(logits.sigmoid() if sigmoid else logits.softmax(-1))
        return torch.cat(scores)

    run_texts = texts
    texts = texts[:1]; run(); texts = run_texts  # warm-up
    best = best_cpu = 1e30
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        scores = run()
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - cpu_started)
    print(json.dumps(dict(texts=len(texts), threads=threads, batch=batch, seconds=best, texts_per_second=len(texts) / best,
                          cpu_texts_per_second=len(texts) / best_cpu, checksum=scores.sum().item())))


main()
