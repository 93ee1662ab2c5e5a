"""Write tests/fixtures/saved_weights/: every head of every family saved with `save_pretrained` (our Keras
format) by the code of a given checkout, with the outputs that code computed, so that a later refactor can be
checked against weights saved before it (tests/models/test_saved_weights_compat.py).

    git archive cfb692b | tar -x -C /tmp/old && python scripts/make_saved_weights_fixtures.py /tmp/old cfb692b

The committed fixtures were written by cfb692b, the last commit before the text-encoder skeleton moved the
families' layers into tfmodels/core (issue "One skeleton"). Models are tiny (vocab 64, width 16) to keep the files small.
"""
import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "saved_weights")
STANDARD = ("Model", "ForMaskedLM", "ForSequenceClassification", "ForMultipleChoice", "ForTokenClassification",
            "ForQuestionAnswering")
FAMILIES = {  # prefix: (tiny config, head suffixes)
    "Yoso": ("yoso-tiny.json", STANDARD),
    "Mra": ("mra-tiny.json", STANDARD),
    "Nystromformer": ("nystromformer-tiny.json", STANDARD),
    "Longformer": ("longformer-tiny.json", STANDARD),
    "XLMRobertaXL": ("xlm-roberta-xl-tiny.json", STANDARD + ("ForCausalLM",)),
    "XLNet": ("xlnet-tiny.json", ("Model", "LMHeadModel", "ForSequenceClassification", "ForMultipleChoice",
                                  "ForTokenClassification", "ForQuestionAnsweringSimple", "ForQuestionAnswering")),
    "Beit": ("beit-tiny.json", ("Model", "ForMaskedImageModeling", "ForImageClassification")),
}
SEGMENTATION = ("Beit", "beit-tiny-segmentation.json", "ForSemanticSegmentation")
BATCH, LENGTH, VOCAB = 2, 9, 64
SMALL = {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 20}
SMALL_XLNET = {"d_model": 16, "n_head": 2, "d_inner": 20}


def inputs_for(name, config):
    """A padded batch (the second row keeps 6 of 9 tokens); [batch, 2 choices, length] for multiple choice."""
    if name.startswith("Beit"):
        pixels = np.random.RandomState(0).uniform(-1, 1, (BATCH, 3, config.image_size, config.image_size))
        return {"pixel_values": pixels.astype(np.float32)}
    rng = np.random.RandomState(0)
    ids = rng.randint(3, VOCAB, size=(BATCH, LENGTH)).astype(np.int32)
    mask = np.ones((BATCH, LENGTH), np.int32)
    mask[1, 6:] = 0
    ids[1, 6:] = config.pad_token_id
    if "MultipleChoice" in name:
        ids, mask = np.stack([ids, ids[::-1]], axis=1), np.stack([mask, mask[::-1]], axis=1)
    return {"input_ids": ids, "attention_mask": mask}


def write(root, prefix, config_file, suffix):
    import keras
    import tfmodels
    name = prefix + suffix
    overrides = dict(SMALL_XLNET if prefix == "XLNet" else SMALL)
    if prefix != "Beit":
        overrides["vocab_size"] = VOCAB
    config = getattr(tfmodels, prefix + "Config").from_pretrained(os.path.join(root, "configs", config_file),
                                                                   **overrides)
    keras.utils.set_random_seed(0)
    model = getattr(tfmodels, name)(config)
    model.build_model()
    inputs = inputs_for(name, config)
    outputs = model(inputs, training=False)
    arrays = {f"output.{key}": np.asarray(value) for key, value in outputs.items()
              if value is not None and hasattr(value, "shape")}
    directory = os.path.join(OUT, name)
    shutil.rmtree(directory, ignore_errors=True)
    model.save_pretrained(directory)
    np.savez_compressed(os.path.join(directory, "expected.npz"),
                        **{f"input.{k}": v for k, v in inputs.items()}, **arrays)
    return name


def main(root, commit):
    sys.path.insert(0, root)
    os.environ.setdefault("TFMODELS_OP_MODE", "reference")
    names = [write(root, prefix, config_file, suffix)
             for prefix, (config_file, suffixes) in FAMILIES.items() for suffix in suffixes]
    names.append(write(root, *SEGMENTATION))
    with open(os.path.join(OUT, "written_by.json"), "w") as f:
        json.dump({"commit": commit, "heads": names}, f, indent=1)
    print(f"{len(names)} heads written to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
