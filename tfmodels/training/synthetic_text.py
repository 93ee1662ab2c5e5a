"""Deterministic synthetic text: multilingual sentences for training the bundled tokenizer models, varied
strings for tokenizer tests, and a small labelled sentiment set for the demo job. Nothing is downloaded."""
import random

LEXICON = {
    "en": {"neutral": "the a this that my your our cat dog house city train book film song day night river "
                      "road music team game story idea morning winter summer people friend teacher window "
                      "table phone computer garden street market coffee breakfast weekend journey".split(),
           "verb": "is was looks seems feels became remains sounds".split(),
           "positive": "good great wonderful excellent lovely happy brilliant delightful amazing pleasant "
                       "beautiful fantastic".split(),
           "negative": "bad terrible awful horrible sad boring dreadful poor ugly annoying disappointing "
                       "miserable".split()},
    "fr": {"neutral": "le la ce cette mon ton notre chat chien maison ville train livre film chanson jour "
                      "nuit rivière route musique équipe histoire idée matin hiver été café rue marché".split(),
           "verb": "est était semble paraît devient reste".split(),
           "positive": "bon excellent merveilleux heureux magnifique agréable génial délicieux superbe".split(),
           "negative": "mauvais terrible affreux triste ennuyeux horrible pénible décevant laid".split()},
    "de": {"neutral": "der die das dieser mein dein unser Katze Hund Haus Stadt Zug Buch Film Lied Tag "
                      "Nacht Fluss Straße Musik Mannschaft Geschichte Idee Morgen Winter Sommer Kaffee".split(),
           "verb": "ist war scheint wirkt wird bleibt".split(),
           "positive": "gut großartig wunderbar herrlich fröhlich schön prima ausgezeichnet".split(),
           "negative": "schlecht schrecklich furchtbar traurig langweilig hässlich ärgerlich übel".split()},
    "es": {"neutral": "el la este esta mi tu nuestro gato perro casa ciudad tren libro película canción "
                      "día noche río camino música equipo historia idea mañana invierno verano café".split(),
           "verb": "es era parece resulta queda está".split(),
           "positive": "bueno excelente maravilloso feliz precioso agradable estupendo genial".split(),
           "negative": "malo terrible horrible triste aburrido feo pésimo desagradable".split()},
}

EXTRA_WORDS = ("привет мир город книга музыка хорошо плохо γειά κόσμος πόλη βιβλίο 日本 東京 中文 北京 "
               "音楽 映画 朝 夜 猫 犬 مرحبا عالم كتاب مدينة नमस्ते दुनिया 안녕 세계 שלום עולם "
               "über Straße naïve café façade coöperate Ångström œuvre 2024 3.14 1,000 42 "
               "e-mail U.S.A. don't it's C++ x86_64 #hashtag @user http://example.com 50% $9.99").split()

PUNCTUATION = list(",.;:!?()-\"'")


def sentence(rng, lang=None, length=None):
    lang = lang or rng.choice(sorted(LEXICON))
    lex = LEXICON[lang]
    words = []
    for _ in range(length or rng.randint(3, 14)):
        kind = rng.random()
        if kind < 0.55:
            words.append(rng.choice(lex["neutral"]))
        elif kind < 0.65:
            words.append(rng.choice(lex["verb"]))
        elif kind < 0.75:
            words.append(rng.choice(lex["positive"] + lex["negative"]))
        elif kind < 0.9:
            words.append(rng.choice(EXTRA_WORDS))
        else:
            words.append(rng.choice(PUNCTUATION))
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice([".", "!", "?", ""])


def corpus(num_lines=20000, seed=1234):
    rng = random.Random(seed)
    return [sentence(rng) for _ in range(num_lines)]


def tokenizer_test_strings(num=300, seed=7, special_tokens=()):
    """Varied strings for tokenizer parity: unicode, whitespace runs, special tokens, long and empty inputs."""
    rng = random.Random(seed)
    fixed = ["", " ", "   ", "\t\n", "hello", "Hello, World!", "  leading and trailing  ", "multiple   spaces",
             "tabs\tand\nnewlines\r\nhere", "ﬁne ligature and full-width １２３ ＡＢＣ", "e\u0301 combining accent",
             "emoji 😀 🚀 text", "rare 㐀㐁 characters 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ALL CAPS SENTENCE", "numbers 12345 67.89 1e10",
             "don't won't it's", "a" * 50, " ".join(["word"] * 200)]
    strings = list(fixed)
    specials = list(special_tokens)
    while len(strings) < num:
        text = sentence(rng, length=rng.randint(1, 40))
        roll = rng.random()
        if specials and roll < 0.2:
            words = text.split(" ")
            position = rng.randint(0, len(words))
            token = rng.choice(specials)
            glue = rng.choice([" ", "", "  "])
            text = glue.join(words[:position] + [token] + words[position:])
        elif roll < 0.3:
            text = text.replace(" ", rng.choice(["  ", "\t", " \n ", "   "]))
        elif roll < 0.35:
            text = text.upper()
        strings.append(text)
    return strings


def sentiment_examples(num, seed):
    """Sentences whose label (1 positive, 0 negative) is decided by the sentiment words they contain."""
    rng = random.Random(seed)
    examples = []
    while len(examples) < num:
        lang = rng.choice(sorted(LEXICON))
        lex = LEXICON[lang]
        label = rng.randint(0, 1)
        words = [rng.choice(lex["neutral"]) for _ in range(rng.randint(2, 6))]
        words.insert(rng.randint(1, len(words)), rng.choice(lex["verb"]))
        polar = lex["positive"] if label else lex["negative"]
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randint(0, len(words)), rng.choice(polar))
        text = " ".join(words)
        examples.append({"text": text[0].upper() + text[1:] + ".", "label": label})
    return examples
