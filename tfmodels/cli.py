"""The `tfmodels` command (also `python -m tfmodels`): fine-tune, evaluate, export and serve any family."""
import argparse
import json
import os
import re
import sys

DESCRIPTION = """\
Fine-tune, evaluate, export and serve tfmodels (YOSO, Nystromformer, MRA, Longformer, XLNet, XLM-RoBERTa-XL,
BEiT) with Keras, on one machine or many.

A recipe (a JSON file in configs/recipes/, or any path) names the model (family + config or pretrained
checkpoint + task head), the data, the optimizer, the schedule, the training settings and the export. Override
any key on the command line with --set section.key=value.

typical session:
  tfmodels list                                             families, heads, configs, recipes
  tfmodels train listops-xlm-roberta-xl                     train, evaluate, export, reload + predict
  tfmodels train demo-xlm-roberta-xl-sentiment --set training.epochs=1 --set training.output_dir=/tmp/run
  tfmodels evaluate demo-xlm-roberta-xl-sentiment --checkpoint runs/demo-xlm-roberta-xl-sentiment/best
  tfmodels export demo-xlm-roberta-xl-sentiment --checkpoint runs/demo-xlm-roberta-xl-sentiment/best --output export/1
  tfmodels predict runs/demo-xlm-roberta-xl-sentiment/export/1 --text "What a wonderful day."
  tfmodels convert hf-checkpoint-dir ours-dir --task sequence-classification
  tfmodels bench xlm_roberta_xl -- --lengths 512,1024
  tfmodels build-ops

distributed training:
  one machine, several GPUs:  --set training.strategy=mirrored   (Keras fit under MirroredStrategy)
  several machines:           set TF_CONFIG on every worker and run the same command; strategy "auto" picks
                              MultiWorkerMirroredStrategy (tfmodels' own distributed train step, since Keras 3
                              fit fails under it, keras-team/keras#20585)
"""


def _add_recipe_arguments(parser):
    parser.add_argument("recipe", help="recipe name in configs/recipes/ or path to a recipe JSON file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set training.epochs=1 (repeatable; values are JSON "
                             "when they parse)")


def build_parser():
    parser = argparse.ArgumentParser(prog="tfmodels", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("train", help="train from a recipe, then evaluate, export and test the export",
                            description="Train from a recipe: model.fit with a progress bar, metrics, warm-up + "
                                        "decay schedule, AdamW, clipping, optional bf16, TensorBoard + CSV logs, "
                                        "checkpoints every training.checkpoint_every steps (an interrupted run "
                                        "resumes where it stopped when started again with the same output_dir), "
                                        "best-model selection, evaluation on data.test, export to a SavedModel "
                                        "and a prediction with it in a fresh process.")
    _add_recipe_arguments(p)
    p.add_argument("--no-export", action="store_true", help="skip the export (and its fresh-process test)")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--fail-after", type=int, default=None, metavar="STEPS",
                   help="stop with an error after STEPS training steps (to try resuming)")

    p = commands.add_parser("evaluate", help="evaluate a checkpoint on the recipe's test (or another) split")
    _add_recipe_arguments(p)
    p.add_argument("--checkpoint", required=True, help="a save_pretrained directory (e.g. runs/NAME/best)")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))

    p = commands.add_parser("predict", help="run a SavedModel or a checkpoint on texts, files or images",
                            description="Prints one JSON line per example: label names with scores, tags per "
                                        "word, answer spans, filled masks, segmentation class shares. A SavedModel "
                                        "runs through its serving signatures, as TF Serving would.")
    p.add_argument("model", help="SavedModel directory (export/1) or checkpoint directory (config.json + weights)")
    p.add_argument("--text", action="append", help="input text (repeatable); for QA the question")
    p.add_argument("--text-pair", action="append", help="second text (QA: the context)")
    p.add_argument("--input", help="a data file (JSONL, CSV, SQuAD JSON, CoNLL, TXT) or image folder")
    p.add_argument("--image", action="append", help="an image file (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="at most this many examples")
    p.add_argument("--top-k", type=int, default=1, help="classification: show the k best labels")
    p.add_argument("--task", default=None, help="the task, when a checkpoint's config does not tell it")

    p = commands.add_parser("export", help="export a checkpoint as a SavedModel for TF Serving")
    _add_recipe_arguments(p)
    p.add_argument("--checkpoint", required=True, help="a save_pretrained directory")
    p.add_argument("--output", required=True, help="SavedModel directory (use a numbered version: export/1)")
    p.add_argument("--numeric-only", action="store_true",
                   help="no raw-text signatures: a SavedModel that loads without TF Text's ops (e.g. in "
                        "saved_model_cli or a TF Serving build without them); clients send token ids")

    p = commands.add_parser("convert", help="convert a Hugging Face checkpoint directory to tfmodels' format",
                            description="Load an HF checkpoint directory (config.json + model.safetensors, sharded "
                                        "or not) into the matching tfmodels class and save it with "
                                        "save_pretrained; prints the mapped / missing / unexpected weights.")
    p.add_argument("source", help="HF checkpoint directory or Hub id (org/name)")
    p.add_argument("output", help="output directory")
    p.add_argument("--task", default=None, help="task head (default: from config.json's architectures)")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit (Hub ids only)")
    p.add_argument("--weights-format", default=None, choices=["safetensors", "h5", "bin"],
                   help="which weights to read when there are several (default: safetensors, then h5, then bin)")
    p.add_argument("--hf-format", action="store_true", help="write HF safetensors instead of Keras weights")
    p.add_argument("--strict", action="store_true", help="fail when any weight is missing or unexpected")

    p = commands.add_parser("bench", help="run a benchmark script from benchmarks/; its table and picture go to "
                                          "OUTPUT_DIR/NAME.txt and NAME.png")
    p.add_argument("--output-dir", default="bench-results",
                   help="folder for NAME.txt (the printed table), NAME.png (time and peak memory against length, "
                        "ours and the references; `plot` extra) and NAME.jsonl (the measurements); give it before "
                        "NAME")
    p.add_argument("name", nargs="?", help="benchmark name (bench_<name>.py); omit to list them")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script (after --)")

    p = commands.add_parser("build-ops", help="compile the custom TF ops ahead of time")
    p.add_argument("--cuda", choices=("auto", "yes", "no"), default="auto", help="build the CUDA kernels too")
    p.add_argument("--force", action="store_true", help="rebuild even when cached")

    p = commands.add_parser("list", help="list families, task heads, configs and recipes")
    p.add_argument("what", nargs="?", default="all", choices=("all", "families", "configs", "recipes"))
    # --debug before or after the command; SUPPRESS keeps a command's parser from resetting the global flag.
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    for command in commands.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the full traceback of an error")
    return parser


# ---------------------------------------------------------------------------------------------------------------


def cmd_train(args):
    from tfmodels.training import callbacks, recipe as recipe_lib, runner
    recipe = recipe_lib.load_recipe(args.recipe, args.overrides)
    extra = [callbacks.FailAfterSteps(args.fail_after)] if args.fail_after else []
    summary = runner.train(recipe, extra_callbacks=extra, evaluate_after=not args.no_eval,
                           export_after=False if args.no_export else None)
    summary.pop("config", None)
    print(f"trained {summary['steps']} steps in {summary['train_seconds']:.0f} s ({summary['strategy']} strategy)")
    for key, value in summary.get("metrics", {}).items():
        print(f"  {key}: {value:.4f}")
    return 0


def cmd_evaluate(args):
    from tfmodels.training import recipe as recipe_lib, runner
    recipe = recipe_lib.load_recipe(args.recipe, args.overrides)
    results = runner.evaluate_checkpoint(recipe, args.checkpoint, args.split)
    print(json.dumps({f"{args.split}_{k}": v for k, v in results.items()}, indent=2))
    return 0


def cmd_export(args):
    from tfmodels.training import recipe as recipe_lib, runner
    recipe = recipe_lib.load_recipe(args.recipe, args.overrides)
    runner.export_checkpoint(recipe, args.checkpoint, args.output, text_signatures=not args.numeric_only)
    return 0


def cmd_predict(args):
    from tfmodels.training import predict
    runner = predict.load_runner(args.model, args.task)
    rows = predict.examples_from(runner.task, args.text, args.text_pair, args.input, args.image, args.limit)
    for result in predict.predict(runner, rows, top_k=args.top_k):
        print(predict.format_result(result))
    return 0


def cmd_convert(args):
    from tfmodels.core import hub
    from tfmodels.registry import TASKS, families
    options = hub.HubOptions(revision=args.revision)
    with open(hub.resolve_file(args.source, "config.json", options), encoding="utf-8") as f:
        config = json.load(f)
    spec = next((s for s in families().values() if s.name == config.get("model_type")), None)
    if spec is None:
        raise SystemExit(f"{args.source}: model_type {config.get('model_type')!r} is not a tfmodels family")
    task = args.task
    if task is None:
        architecture = (config.get("architectures") or [spec.prefix + "Model"])[0]
        task = next((t for t in spec.tasks() if spec.head_class_name(t) == architecture), "base")
    if task not in TASKS:
        raise SystemExit(f"unknown task {task!r}")
    cls = spec.head_class(task)
    tokenizer_class = spec.tokenizer_class()
    tokenizer_files = list(tokenizer_class.vocab_files_names.values()) + ["tokenizer_config.json",
                                                                        "special_tokens_map.json"] \
        if tokenizer_class is not None else []
    # A Hub id becomes the cached snapshot holding the config, one set of weights and the tokenizer files.
    source = hub.snapshot(args.source, optional=tokenizer_files, options=options,
                          weights_format=args.weights_format)
    model, info = cls.from_pretrained(source, output_loading_info=True, strict=False,
                                      weights_format=args.weights_format)
    print(f"{cls.__name__}: {info.report()}")
    print(f"mapped: {len(info.mapped)}, missing: {len(info.missing)}, unexpected: {len(info.unexpected)}, "
          f"mismatched: {len(info.mismatched)}")
    if args.strict and (info.missing or info.unexpected or info.mismatched):
        return 1
    model.save_pretrained(args.output, hf_format=args.hf_format)
    if tokenizer_class is not None and all(os.path.isfile(os.path.join(source, f))
                                           for f in tokenizer_class.vocab_files_names.values()):
        tokenizer_class.from_pretrained(source).save_pretrained(args.output)
    print(f"saved {args.output}")
    return 0


def _benchmarks_dir():
    from tfmodels.registry import REPO_DIR
    return os.path.join(REPO_DIR, "benchmarks")


def cmd_bench(args):
    import subprocess
    folder = _benchmarks_dir()
    available = sorted(f[len("bench_"):-3] for f in os.listdir(folder) if f.startswith("bench_") and f.endswith(".py")) \
        if os.path.isdir(folder) else []
    if not args.name:
        print("benchmarks: " + (", ".join(available) or f"none found in {folder}") +
              ("; targets (issue 16's target table: the scripts it rests on, in one run)" if available else ""))
        return 0
    name = args.name[len("bench_"):] if args.name.startswith("bench_") else args.name
    extra = [a for a in args.args if a != "--"]
    sys.path.insert(0, os.path.dirname(folder))  # the repository root, where the benchmarks package is
    if name == "targets" and available:
        from benchmarks import targets
        return targets.main(["--output-dir", args.output_dir] + extra)
    if name not in available:
        raise SystemExit(f"no benchmark {args.name!r}; available: {', '.join(available + ['targets'])}")
    from benchmarks.common import run_script
    returncode, records = run_script(name, extra, args.output_dir)
    if returncode != 0:
        return returncode
    if os.path.getsize(records) == 0:  # nothing was measured (e.g. --help)
        return 0
    picture = os.path.join(os.path.dirname(records), f"{name}.png")
    # In a process of its own: drawing imports matplotlib, which the rest of the command does without.
    return subprocess.call([sys.executable, "-m", "benchmarks.plot", records, picture, "--title",
                            f"tfmodels bench {name}"], cwd=os.path.dirname(folder))


def cmd_build_ops(args):
    """Builds every op family; a failed one is reported with its first compiler error and the others still build.
    Exits 1 when any failed."""
    from tfmodels.ops import loader
    with_cuda = {"auto": None, "yes": True, "no": False}[args.cuda]
    built = loader.build_all(with_cuda=with_cuda, force=args.force)
    if not built:
        print("no custom-op families found in custom_ops/")
    for family, result in built.items():
        if isinstance(result, Exception):
            # The message's first line names the first compiler error; the rest is the compiler's output.
            print(f"{family}: FAILED: {str(result).splitlines()[0]}", file=sys.stderr)
        else:
            print(f"{family}: {result}")
    return 1 if any(isinstance(result, Exception) for result in built.values()) else 0


def cmd_list(args):
    from tfmodels.registry import families
    from tfmodels.training.recipe import list_recipes
    if args.what in ("all", "families", "configs"):
        for spec in families().values():
            print(f"{spec.name}  ({spec.modality}; {spec.prefix}*"
                  + (f"; tokenizer {spec.tokenizer}" if spec.tokenizer else "")
                  + (f"; image processor {spec.image_processor}" if spec.image_processor else "") + ")")
            if args.what != "configs":
                for task in spec.tasks():
                    print(f"  head    {task:24s} {spec.head_class_name(task)}")
            for config in spec.configs():
                print(f"  config  {config}")
    if args.what in ("all", "recipes"):
        print("recipes (configs/recipes/):")
        for name, task, family, description in list_recipes():
            print(f"  {name:40s} {task or '?':24s} {family or '?':16s} {description}")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export,
            "convert": cmd_convert, "bench": cmd_bench, "build-ops": cmd_build_ops, "list": cmd_list}


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from tfmodels import __version__
        print(f"tfmodels {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args) or 0
    except Exception as error:  # every failure: one line on stderr, the traceback only with --debug
        if args.debug:
            raise
        print(f"tfmodels {args.command}: error: {error_line(error)}", file=sys.stderr)
        return 2


def error_line(error):
    """An exception as one line: its message (a TensorFlow error's without the graph node and stack details
    it appends), named by its type unless it is one of the ordinary input errors, and the --debug hint."""
    message = getattr(error, "message", None) or str(error)
    if isinstance(error, KeyError) and error.args:
        message = f"missing key {error.args[0]!r}"
    message = re.sub(r"\s*\[\[.*", "", message, flags=re.S)      # TF: "[[{{node ...}}]]" and what follows
    message = " ".join(message.split()) or "(no message)"
    if not isinstance(error, (FileNotFoundError, ValueError)):
        message = f"{type(error).__name__}: {message}"
    return message + " (run with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
