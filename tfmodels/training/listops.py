"""ListOps, the long-sequence classification task of the Long Range Arena (Tay et al. 2020, after Nangia &
Bowman 2018), generated here from scratch.

An example is a nested prefix expression over the digits 0-9 with four operators, and its label is the value
of the expression (10 classes):

    [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]    ->  5

- `[MAX`, `[MIN`: maximum / minimum of the arguments;
- `[MED`: median of the arguments (the mean of the two middle values for an even count, truncated to an int,
  as in the LRA generator);
- `[SM`: sum of the arguments modulo 10;
- `]` closes the innermost open operator.

Tokenisation is whitespace splitting: every operator, `]` and digit is one word. The vocabulary (`VOCABULARY`)
is the five special tokens of the XLM-R layout (`<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3, `<mask>` 4) followed
by the 15 ListOps words, so `[MAX` is id 5, ..., `]` id 9, `0` id 10, ..., `9` id 19 (see
tfmodels/assets/data/listops/vocab.txt and tfmodels.training.word_tokenizer.WordLevelTokenizer).

Differences from LRA's data, chosen so the task trains in minutes on 2 CPU cores (the bundled set, see
scripts/make_assets.py): nesting depth at most 3 instead of 10, with depths 1, 2 and 3 equally often, sequences of
4-300 tokens (about 25 on average) instead of up to 2000, 8000 training examples instead of 96k, and labels balanced
by rejection sampling (within each depth), so that chance (and the majority class) is 10% instead of LRA's skewed
label distribution. Why the mixed depths: the generator's trees nearly all reach the maximum depth (an argument
is a digit with probability 0.4 only), and on such data alone (99.6% depth 3) the main job's models learned
little beyond the outermost operator (22-23% test accuracy: the outermost operator's most frequent value gives
22.8%); shallower expressions show what each operator computes, and the deeper ones build on that. Test
accuracy per depth is reported in docs/training.md.
"""
import random

OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
CLOSE = "]"
DIGITS = tuple(str(d) for d in range(10))
WORDS = OPERATORS + (CLOSE,) + DIGITS
NUM_CLASSES = 10


def _median(values):
    ordered = sorted(values)
    n = len(ordered)
    if n % 2:
        return ordered[n // 2]
    return int((ordered[n // 2 - 1] + ordered[n // 2]) / 2)


FUNCTIONS = {"[MAX": max, "[MIN": min, "[MED": _median, "[SM": lambda values: sum(values) % 10}


def random_tree(rng, max_depth=6, max_args=6, leaf_probability=0.4, depth=0):
    """A random expression: an int leaf, or (operator, [arguments])."""
    if depth > 0 and (depth >= max_depth or rng.random() < leaf_probability):
        return rng.randint(0, 9)
    operator = rng.choice(OPERATORS)
    arguments = [random_tree(rng, max_depth, max_args, leaf_probability, depth + 1)
                 for _ in range(rng.randint(2, max_args))]
    return operator, arguments


def evaluate(tree):
    if isinstance(tree, int):
        return tree
    operator, arguments = tree
    return FUNCTIONS[operator]([evaluate(a) for a in arguments])


def to_tokens(tree):
    if isinstance(tree, int):
        return [str(tree)]
    operator, arguments = tree
    tokens = [operator]
    for argument in arguments:
        tokens.extend(to_tokens(argument))
    tokens.append(CLOSE)
    return tokens


def parse(text):
    """Evaluate a ListOps string (the inverse of to_tokens, for checking data and predictions)."""
    stack = [[]]
    operators = []
    for token in text.split():
        if token in FUNCTIONS:
            operators.append(token)
            stack.append([])
        elif token == CLOSE:
            arguments = stack.pop()
            stack[-1].append(FUNCTIONS[operators.pop()](arguments))
        elif token in DIGITS:
            stack[-1].append(int(token))
        else:
            raise ValueError(f"not a ListOps token: {token!r}")
    if operators or len(stack) != 1 or len(stack[0]) != 1:
        raise ValueError("unbalanced ListOps expression")
    return stack[0][0]


def depth(tree):
    """Nesting depth: 0 for a digit, 1 for an operator over digits."""
    if isinstance(tree, int):
        return 0
    return 1 + max(depth(a) for a in tree[1])


def examples(num, seed, min_length=20, max_length=300, max_depth=6, max_args=6, balanced=True, mixed_depths=False):
    """`num` examples {"text", "label"} with min_length <= tokens <= max_length.

    balanced: as many examples of every label (rejection sampling). mixed_depths: every depth from 1 to
    max_depth equally often (balanced then holds within each depth); without it, nearly every tree reaches
    max_depth (at depth > 0 an argument is a digit with probability 0.4 only)."""
    rng = random.Random(seed)
    depths = list(range(1, max_depth + 1)) if mixed_depths else [None]
    per_cell = -(-num // (NUM_CLASSES * len(depths)))
    counts = {}
    result = []
    while len(result) < num:
        wanted = rng.choice(depths)
        tree = random_tree(rng, wanted or max_depth, max_args)
        if wanted is not None and depth(tree) != wanted:
            continue
        tokens = to_tokens(tree)
        if not min_length <= len(tokens) <= max_length:
            continue
        label = evaluate(tree)
        cell = (wanted, label)
        if balanced and counts.get(cell, 0) >= per_cell:
            continue
        counts[cell] = counts.get(cell, 0) + 1
        result.append({"text": " ".join(tokens), "label": label})
    rng.shuffle(result)
    return result
