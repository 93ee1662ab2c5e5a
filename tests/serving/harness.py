"""Serve SavedModels through TensorFlow's C++ loader (the one TF Serving uses), from a test.

`serve(jobs)` pickles the jobs, runs tests/serving/driver.py in fresh processes (one without TF Text's ops for
the jobs that do not ask for them, one with them), checks that those processes imported no Python of
TensorFlow, TF Text or tfmodels, and returns one result per job:
    {"error": None or the loader's / session's message,
     "signatures": {name: {"inputs": {key: dtype}, "outputs": {key: dtype}}},   (from the loaded MetaGraphDef)
     "outputs": [{key: numpy array}, ...],                                      (one per request, in order)
     "warmup": [{"signature", "inputs", "outputs"}, ...]}                       (when the job asks for it)
A job: {"path": SavedModel dir, "requests": [(signature, {key: numpy array}), ...], "warmup": bool,
"text_ops": bool}. Strings are numpy object arrays of bytes.
"""
import os
import pickle
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_driver(jobs, text_ops, timeout):
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, result_path = os.path.join(tmp, "spec.pkl"), os.path.join(tmp, "result.pkl")
        with open(spec_path, "wb") as f:
            pickle.dump({"jobs": jobs, "text_ops": text_ops}, f)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        process = subprocess.run([sys.executable, "-m", "tests.serving.driver", spec_path, result_path], cwd=ROOT,
                                 env=env, capture_output=True, text=True, timeout=timeout)
        assert process.returncode == 0, f"the C API driver failed:\n{process.stdout}\n{process.stderr[-4000:]}"
        with open(result_path, "rb") as f:
            result = pickle.load(f)
    assert not result["modules"], f"the serving process imported {result['modules']}"
    assert bool(result["op_libraries"]) == text_ops
    return result["jobs"]


def serve(jobs, timeout=900):
    """Run `jobs` (see the module docstring) and return their results, in order."""
    results = [None] * len(jobs)
    for text_ops in (False, True):
        indices = [i for i, job in enumerate(jobs) if bool(job.get("text_ops")) == text_ops]
        if indices:
            for i, result in zip(indices, _run_driver([jobs[i] for i in indices], text_ops, timeout)):
                results[i] = result
    return results


def serve_ok(jobs, timeout=900):
    """serve(), asserting that every job loaded and ran."""
    results = serve(jobs, timeout)
    for job, result in zip(jobs, results):
        assert result["error"] is None, f"{job['path']}: {result['error']}"
    return results
