"""One worker of the two-worker test (tests/e2e/test_multi_worker.py): trains the recipe with
MultiWorkerMirroredStrategy from TF_CONFIG and writes its final weights to an .npz file.

    python tests/e2e/multi_worker_driver.py RECIPE OUTPUT_NPZ [--set key=value ...]
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))


def main(argv):
    recipe_name, output = argv[0], argv[1]
    overrides = [a for a in argv[2:] if a != "--set"]
    from tfmodels.training import recipe as recipe_lib
    from tfmodels.training.distributed import train_multi_worker
    from tfmodels.training.job import Job, choose_strategy
    name, strategy = choose_strategy("multi_worker")  # before any other TF op
    import keras
    import numpy as np
    recipe = recipe_lib.load_recipe(recipe_name, overrides)
    keras.utils.set_random_seed(int(recipe["training"]["seed"]))
    job = Job(recipe)
    summary = train_multi_worker(job, strategy)
    model = summary["model"]
    np.savez(output, steps=summary["steps"], replicas=strategy.num_replicas_in_sync,
             **{f"w{i}": v.numpy() for i, v in enumerate(model.weights)})
    print(f"done: {summary['steps']} steps, {strategy.num_replicas_in_sync} replicas, loss {summary['history']['loss']}")


if __name__ == "__main__":
    main(sys.argv[1:])
