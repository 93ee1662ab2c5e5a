"""Hugging Face Hub ids wherever a path is taken: `from_pretrained("org/name")` of models, configs,
tokenizers and image processors, `tfmodels convert` and recipes.

Everything goes through huggingface_hub, so its cache (HF_HUB_CACHE / `cache_dir`), offline mode
(HF_HUB_OFFLINE=1 / `local_files_only=True`), endpoint (HF_ENDPOINT) and tokens (`token`, HF_TOKEN, the saved
login) behave as with transformers. Only the files a load needs are fetched: config.json, one weight format
(safetensors, else tf_model.h5, else pytorch_model.bin; `weights_format=` picks one), sharded or not, and the
tokenizer / image processor files. The files of one commit lie together in the cache's snapshot folder, which
the directory loaders then read like any checkpoint directory.

Online, the repo's file list (the model-info API) decides which weight files exist; offline, the cached
snapshot's files do. Errors say what is missing: the repo, the revision, usable weights, or (offline) the
cached copy.
"""
import dataclasses
import os

from tfmodels.core import checkpoint as ckpt

CONFIG_NAME = "config.json"
# Tokenizer and image processor files of every family, fetched when present (recipes and `tfmodels convert`).
PREPROCESSOR_FILES = ("tokenizer_config.json", "special_tokens_map.json", "spiece.model", "sentencepiece.bpe.model",
                      "vocab.json", "merges.txt", "preprocessor_config.json")


class HubError(OSError):
    """A Hub id could not be resolved (missing repo, revision or file, or offline without a cached copy)."""


@dataclasses.dataclass
class HubOptions:
    """Where and how to fetch: the keyword arguments every `from_pretrained` takes for Hub ids."""
    revision: str = None
    cache_dir: str = None
    local_files_only: bool = False
    token: object = None

    @property
    def offline(self):
        from huggingface_hub import constants
        return self.local_files_only or constants.HF_HUB_OFFLINE


def is_local(path):
    """A path on disk (a file or directory that exists) rather than a Hub id."""
    return os.path.exists(os.fspath(path))


def _describe(repo_id, options):
    return f"{repo_id!r}" + (f" at revision {options.revision!r}" if options.revision else "")


def download(repo_id, filename, options, required=True):
    """The local path of `filename` in `repo_id` (downloaded or from the cache), None when the repo has no
    such file and `required` is False."""
    from huggingface_hub import errors, hf_hub_download
    try:
        return hf_hub_download(repo_id, filename, revision=options.revision, cache_dir=options.cache_dir,
                               local_files_only=options.offline, token=options.token)
    except errors.HFValidationError:
        raise HubError(f"{repo_id!r} is neither a local path nor a valid Hub id (org/name)") from None
    except errors.LocalEntryNotFoundError:
        if not required:
            return None
        raise HubError(f"{filename} of {_describe(repo_id, options)} is not in the Hugging Face cache "
                       f"({options.cache_dir or _cache_dir()}) and the Hub was not asked or could not be reached "
                       f"({_offline_reason(options)}). Load it once online, or pass a local directory.") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"{repo_id!r} has no revision {options.revision!r} (a branch, tag or commit)") from None
    except errors.RepositoryNotFoundError:
        raise HubError(f"{repo_id!r} is neither a local directory nor a model repository on the Hub "
                       f"({_endpoint()}); for a private or gated repo pass token=...") from None
    except errors.EntryNotFoundError:
        if not required:
            return None
        raise HubError(f"{_describe(repo_id, options)} has no file {filename}") from None


def _cache_dir():
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def _endpoint():
    from huggingface_hub import constants
    return constants.ENDPOINT


def _offline_reason(options):
    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE=1"
    return "local_files_only=True" if options.local_files_only else "connection failed"


def repo_files(repo_id, options):
    """The file names of the repo at the revision (one model-info call), or None when the Hub cannot be
    reached."""
    import requests
    from huggingface_hub import HfApi, errors
    try:
        info = HfApi().model_info(repo_id, revision=options.revision, token=options.token)
    except (requests.ConnectionError, requests.Timeout, errors.OfflineModeIsEnabled):
        return None
    except errors.RevisionNotFoundError:
        raise HubError(f"{repo_id!r} has no revision {options.revision!r} (a branch, tag or commit)") from None
    except errors.RepositoryNotFoundError:
        raise HubError(f"{repo_id!r} is neither a local directory nor a model repository on the Hub "
                       f"({_endpoint()}); for a private or gated repo pass token=...") from None
    return [sibling.rfilename for sibling in info.siblings or []]


def resolve_file(path, filename, options=None, required=True):
    """`filename` in a local directory or in a Hub repo."""
    options = options or HubOptions()
    if is_local(path):
        local = os.path.join(path, filename)
        if os.path.isfile(local):
            return local
        if required:
            raise FileNotFoundError(f"No {filename} in {path}")
        return None
    return download(os.fspath(path), filename, options, required=required)


def model_files(path, options=None, weights_format=None):
    """A local directory holding config.json and the weights to load from `path` (a directory or a Hub id),
    and the weight format to read there ("safetensors", "h5", "bin", or None for our own Keras weights,
    which only local directories hold)."""
    options = options or HubOptions()
    if is_local(path):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{path} is not a directory with config.json and weights")
        return path, weights_format
    repo_id = os.fspath(path)
    config_path = download(repo_id, CONFIG_NAME, options)
    snapshot = os.path.dirname(config_path)
    available = None if options.offline else repo_files(repo_id, options)
    if available is None:
        # No file list offline (or with the Hub unreachable, where huggingface_hub fell back to its cache too):
        # the cached snapshot holds what earlier loads fetched.
        available = os.listdir(snapshot)
    chosen = ckpt.choose_weights(available, weights_format)
    if chosen is None:
        wanted = f"{weights_format} weights" if weights_format else \
            "weights (model.safetensors, tf_model.h5 or pytorch_model.bin, sharded or not)"
        if options.offline:
            raise HubError(f"{_describe(repo_id, options)}: no {wanted} in the Hugging Face cache "
                           f"({snapshot}), and the Hub was not asked ({_offline_reason(options)})")
        raise HubError(f"{_describe(repo_id, options)} has no usable {wanted}; it holds: "
                       f"{', '.join(sorted(available)) or 'nothing'}")
    fmt, file_name = chosen
    local = download(repo_id, file_name, options)
    if file_name.endswith(".index.json"):
        for shard in sorted(set(ckpt.read_index(local).values())):
            download(repo_id, shard, options)
    return snapshot, fmt


def snapshot(path, files=(), optional=(), options=None, weights_format=None):
    """A local directory with the model (config + weights) and the named extra files of `path` (a directory is
    returned as it is): what `tfmodels convert` and recipes read as a checkpoint directory."""
    options = options or HubOptions()
    if is_local(path):
        return path
    directory, _ = model_files(path, options, weights_format)
    for file_name in files:
        download(os.fspath(path), file_name, options)
    for file_name in optional:
        download(os.fspath(path), file_name, options, required=False)
    return directory
