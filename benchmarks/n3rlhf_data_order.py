# n3rlhf_data_order.py: the order in which n3rlhf-dist trains on a data set's examples (shuffle
# on, group_by_length off, no packing, every example in the training split), replicated in Python
# from src/io/batching.cpp (SeededRandom = SplitMix64, seeded_shuffle, epoch_seed, EpochPlan) so
# that the TRL and TRL + PEFT side-by-side benchmarks feed their peer the same batches in the
# same order.

MASK64 = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, bound):
        limit = MASK64 - MASK64 % bound
        value = self.next()
        while value >= limit:
            value = self.next()
        return value % bound


def seeded_shuffle(values, seed):
    random = SplitMix64(seed)
    for i in range(len(values), 1, -1):
        j = random.below(i)
        values[i - 1], values[j] = values[j], values[i - 1]


def epoch_seed(seed, epoch, stream):
    return SplitMix64((seed * 0x2545F4914F6CDD1D + epoch * 0x9E3779B97F4A7C15 + stream) & MASK64).next()


def n3rlhf_order(example_count, seed, batch_size, steps):
    """Examples in the order n3rlhf-dist trains on them (shuffle on, group_by_length off, no packing,
    every example in the training split), for `steps` global batches over as many epochs as needed."""
    per_epoch = example_count // batch_size
    order = []
    epoch = 0
    while len(order) < steps * batch_size:
        plan = list(range(example_count))
        seeded_shuffle(plan, epoch_seed(seed, epoch, 1))
        order.extend(plan[: per_epoch * batch_size])
        epoch += 1
    return order[: steps * batch_size]
