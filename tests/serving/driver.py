"""The fresh process of the C API harness (tests/serving/harness.py starts it): `python -m tests.serving.driver
SPEC RESULT`. It stands for a TF Serving host: it loads each SavedModel with TensorFlow's C++ loader through the
C API, runs the requests it is given and the export's warm-up requests, and pickles the outputs to RESULT.

It never imports TensorFlow's, TF Text's or tfmodels' Python (it reports the modules it has, and the harness
asserts that); with text_ops it first registers TF Text's op libraries, as TF Serving's binary has them.
"""
import os
import pickle
import sys

from tests.serving import c_api, protos

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
FORBIDDEN = ("tensorflow", "tensorflow_text", "tensorflow_serving", "tfmodels", "keras")


def warmup_requests(path):
    """[(signature, {input key: numpy array})] of a SavedModel's warm-up file (PredictionLog records)."""
    log_class = protos.prediction_log_class()
    requests = []
    for record in protos.read_tfrecords(os.path.join(path, WARMUP_FILE)):
        log = log_class.FromString(record)
        if log.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"{path}: a warm-up record holds {log.WhichOneof('log_type')}, not a predict_log")
        request = log.predict_log.request
        inputs = {key: protos.tensor_proto_to_numpy(proto) for key, proto in request.inputs.items()}
        requests.append((request.model_spec.signature_name or "serving_default", inputs))
    return requests


def serve(job):
    """Load one SavedModel and run its requests; errors are reported, not raised, so that one export's failure
    names itself beside the others' results."""
    result = {"error": None, "signatures": {}, "outputs": [], "warmup": []}
    try:
        session = c_api.SavedModelSession(job["path"])
    except RuntimeError as error:
        result["error"] = str(error)
        return result
    try:
        result["signatures"] = session.describe()
        for signature, inputs in job["requests"]:
            result["outputs"].append(session.run(signature, inputs))
        if job.get("warmup"):
            for signature, inputs in warmup_requests(job["path"]):
                result["warmup"].append({"signature": signature, "inputs": inputs,
                                         "outputs": session.run(signature, inputs)})
    except (RuntimeError, ValueError, TypeError, KeyError) as error:
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        session.close()
    return result


def main(spec_path, result_path):
    with open(spec_path, "rb") as f:
        spec = pickle.load(f)
    libraries = c_api.load_text_ops() if spec["text_ops"] else []
    results = [serve(job) for job in spec["jobs"]]
    modules = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    with open(result_path, "wb") as f:
        pickle.dump({"jobs": results, "modules": modules, "op_libraries": libraries}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
