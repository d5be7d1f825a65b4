# make_demo_tokenizer.py: trains the bundled demo tokenizer (assets/tokenizers/n3-demo-bpe), a
# Llama-3-style byte-level BPE (regex Split + ByteLevel, BOS template) of 2048 tokens, on the demo
# data set that `n3rlhf demo-data` writes plus some general English, and writes tokenizer.json and
# tokenizer_config.json (BOS/EOS/PAD and the Llama-3 chat template). Deterministic: the same data
# gives the same bytes.
#
#   build/bin/n3rlhf demo-data --out /tmp/n3-demo-data --pairs 20000 --eval-pairs 256 --seed 0
#   .venv/bin/python scripts/make_demo_tokenizer.py --data /tmp/n3-demo-data/train.jsonl
import argparse
import hashlib
import json
import os

# The counting inside the trainer is parallel; the merges do not depend on it, but one thread
# rules out any doubt about determinism.
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

VOCAB_SIZE = 2048
BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
# Llama 3's pre-tokenizer pattern.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Meta-Llama-3-8B-Instruct's chat template (the one `data.chat_template: "llama3"` reproduces).
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# General English, so that text outside the demo still gets sensible pieces.
GENERAL_ENGLISH = """\
The morning was cold and clear, and the road into the village was still covered with frost.
She opened the window, listened to the birds for a while, and then went back to her work.
Most people learn to read before they learn to write, but both take years of practice.
If you want to understand a problem, try to explain it to someone who has never seen it.
The library closes at six o'clock on weekdays and at noon on Saturdays.
He said that the train would be late, so we decided to walk to the next station instead.
A good answer is short, correct, and written in the form that the question asks for.
Water boils at one hundred degrees Celsius at sea level and freezes at zero degrees.
There are seven days in a week, twelve months in a year, and about thirty days in a month.
The children played in the garden until it was dark, then came inside for dinner.
Please write your name, your address and your phone number at the top of the form.
The answer to a question should follow the instructions: if it asks for a number, give a number.
They built a small wooden boat and sailed it across the lake on a calm summer day.
What is the capital of France? The capital of France is Paris.
Which animal is larger, an elephant or a mouse? An elephant is much larger than a mouse.
Thank you for your help yesterday; I could not have finished the report without you.
Computers store numbers in binary, using only the digits zero and one.
The weather will be warm and sunny tomorrow, with a light wind from the west.
Good software is tested carefully, and its errors explain what went wrong and how to fix it.
When you are not sure about an answer, it is better to say so than to guess.
Reading a book on a rainy afternoon is one of the simplest pleasures in life.
The museum has paintings, old maps, and a collection of clocks from many countries.
My brother likes to cook, and on Sundays he makes bread, soup and an apple cake.
A model learns from examples: it sees many questions with their answers and adjusts itself.
Some answers are preferred over others because they are right, clear, and polite.
Time flies like an arrow; fruit flies like a banana.
"Where are you going?" she asked. "To the market," he replied, "and then home."
It's late, and we're tired, but they'll wait for us; I'd rather not keep them waiting.
The meeting starts at 9:30 and ends at 11:00; lunch is served at 12:15 in room 204.
Prices rose by 3.5 percent last year, from $120 to $124.20 for the same basket of goods.
Send the results as a JSON object, for example {"status": "ok", "count": 3}.
Lists can be written with commas: red, green and blue; or one item per line.
UPPERCASE LETTERS ARE USED FOR EMPHASIS, AND lowercase letters for ordinary text.
Every spring the farmers plant wheat, barley and potatoes in the fields behind the old mill.
The doctor listened to her heart, checked her temperature, and told her to rest for a few days.
Our teacher explained how plants turn sunlight, water and air into sugar and oxygen.
The company hired twelve new engineers and opened an office near the central station.
During the storm the electricity went out, so the family lit candles and played cards.
He carried the heavy suitcase up four flights of stairs because the elevator was broken.
The orchestra practised the symphony every evening for a month before the concert.
Mountains cover almost a quarter of the country, and many rivers begin in their valleys.
Scientists measured the distance to the nearest galaxy with a new kind of telescope.
The recipe needs two eggs, a cup of flour, some butter, sugar and a pinch of salt.
Firefighters arrived within minutes and rescued everyone from the burning building.
She painted the kitchen yellow and hung a picture of the sea above the table.
Travellers should check the timetable, buy a ticket, and arrive early at the airport.
The newspaper reported that the bridge would be repaired before the end of winter.
Students who practise regularly usually remember more than those who study the night before.
The baker wakes up at four in the morning to prepare fresh bread for the shop.
A committee of experts reviewed the proposal and recommended several important changes.
The hospital, the school and the police station are all on the same street.
Penguins cannot fly, but they are excellent swimmers and can dive very deep.
Please remember to turn off the lights and lock the door when you leave the office.
The history of the town goes back more than eight hundred years, to a small fishing village.
Volunteers collected rubbish from the beach and planted trees along the river bank.
Honesty, patience and kindness are qualities that most people admire in a friend.
The machine learning course covers probability, statistics, optimisation and neural networks.
Our neighbours have a friendly dog, two cats, and a parrot that can whistle a tune.
Questions and Answers
Q: How many legs does a spider have?
A: Eight.
Q: What colour is the sky on a clear day?
A: Blue.
"""


def demo_texts(paths):
    # The prompt followed by each response, as the trainers tokenise them.
    texts = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                prompt = row.get("prompt", "")
                for key in ("chosen", "rejected", "completion"):
                    if key in row:
                        texts.append(prompt + row[key])
    return texts


def build_tokenizer(corpus):
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    return tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", nargs="+", required=True, help="JSONL files written by `n3rlhf demo-data`")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "assets", "tokenizers", "n3-demo-bpe"))
    args = parser.parse_args()

    demo = demo_texts(args.data)
    # English lines repeated so that their words weigh against the (much larger) demo data.
    corpus = demo + GENERAL_ENGLISH.splitlines() * 50
    tokenizer = build_tokenizer(corpus)

    os.makedirs(args.out, exist_ok=True)
    tokenizer.save(os.path.join(args.out, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "chat_template": CHAT_TEMPLATE,
    }
    with open(os.path.join(args.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
        f.write("\n")

    # A few facts worth seeing when the data changes: size, pieces per demo row, round trips.
    reloaded = Tokenizer.from_file(os.path.join(args.out, "tokenizer.json"))
    lengths = [len(reloaded.encode(text).ids) for text in demo]
    for text in demo[:2000] + GENERAL_ENGLISH.splitlines():
        assert reloaded.decode(reloaded.encode(text).ids, skip_special_tokens=True) == text, text
    with open(os.path.join(args.out, "tokenizer.json"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"vocab {reloaded.get_vocab_size()} tokens; demo rows: mean {sum(lengths) / len(lengths):.1f} tokens, "
          f"max {max(lengths)}; tokenizer.json sha256 {digest}")


if __name__ == "__main__":
    main()
