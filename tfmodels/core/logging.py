"""One logger for the package, and `warn_once` for fallbacks that must be announced exactly once."""
import logging

logger = logging.getLogger("tfmodels")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("tfmodels %(levelname)s: %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

_already_warned = set()


def warn_once(key, message):
    """Log `message` as a warning the first time `key` is seen in this process."""
    if key in _already_warned:
        return
    _already_warned.add(key)
    logger.warning(message)
