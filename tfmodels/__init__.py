"""tfmodels: TensorFlow / Keras 3 implementations of YOSO, Nystromformer, MRA, Longformer, XLNet,
XLM-RoBERTa-XL and BEiT, with Hugging Face compatible names, configs, outputs and checkpoints."""
import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

from tfmodels.core.configuration import PretrainedConfig  # noqa: E402
from tfmodels.core.modeling import PreTrainedModel  # noqa: E402
from tfmodels.core.outputs import *  # noqa: E402,F401,F403
from tfmodels.models.xlm_roberta_xl import *  # noqa: E402,F401,F403
from tfmodels.models.yoso import *  # noqa: E402,F401,F403
from tfmodels.models.nystromformer import *  # noqa: E402,F401,F403
from tfmodels.models.longformer import *  # noqa: E402,F401,F403
from tfmodels.models.mra import *  # noqa: E402,F401,F403
from tfmodels.models.xlnet import *  # noqa: E402,F401,F403
from tfmodels.models.beit import *  # noqa: E402,F401,F403
from tfmodels.tokenizers import *  # noqa: E402,F401,F403
from tfmodels.auto import *  # noqa: E402,F401,F403
from tfmodels.pipelines import pipeline  # noqa: E402,F401
