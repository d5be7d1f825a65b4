#!/usr/bin/env python3
# tokenizer_peer.py: the peer side of the tokenizer benchmark. `corpus OUT MB` writes a corpus of
# Python standard-library sources (documents separated by "\x1e"); `encode TOKENIZER CORPUS IDS_OUT`
# encodes every document with the pip tokenizers library (best of 3 in process CPU seconds, one
# thread when run with RAYON_NUM_THREADS=1 under taskset), writes [len, ids...] per document as
# int32, prints MB/s.
import array
import pathlib
import sys
import sysconfig
import time


def make_corpus(out, megabytes):
    limit = int(float(megabytes) * 1e6)
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    documents, size = [], 0
    for path in sorted(root.rglob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        text = text.replace("\x1e", "")
        documents.append(text)
        size += len(text.encode("utf-8"))
        if size >= limit:
            break
    pathlib.Path(out).write_text("\x1e".join(documents), encoding="utf-8")


def encode(tokenizer_path, corpus_path, ids_out):
    from tokenizers import Tokenizer
    documents = [d for d in pathlib.Path(corpus_path).read_text(encoding="utf-8").split("\x1e") if d]
    size = sum(len(d.encode("utf-8")) for d in documents)
    best, encodings = float("inf"), None
    for _ in range(3):
        start = time.process_time()
        tokenizer = Tokenizer.from_file(tokenizer_path)
        encodings = tokenizer.encode_batch(documents, add_special_tokens=False)
        best = min(best, time.process_time() - start)
    ids = array.array("i")
    for encoding in encodings:
        ids.append(len(encoding.ids))
        ids.extend(encoding.ids)
    with open(ids_out, "wb") as out:
        ids.tofile(out)
    print(f"{size / 1e6 / best:.4f}")


if __name__ == "__main__":
    if sys.argv[1] == "corpus":
        make_corpus(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "encode":
        encode(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit("usage: tokenizer_peer.py corpus OUT MB | encode TOKENIZER CORPUS IDS_OUT")
