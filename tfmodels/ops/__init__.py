"""Python side of the custom ops: mode switch (dispatch), loader and pure-TF twins."""
from tfmodels.ops.dispatch import get_op_mode, op_mode, set_op_mode
