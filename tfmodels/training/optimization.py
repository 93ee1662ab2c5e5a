"""Optimizer and learning-rate schedule from a recipe: AdamW (no decay on biases and norms), gradient clipping,
linear warm-up then linear / cosine / constant decay."""
import math

import keras
import tensorflow as tf

NO_DECAY = ["bias", "gamma", "beta", "LayerNorm", "layer_norm"]


@keras.saving.register_keras_serializable(package="tfmodels")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then `decay` ("linear", "cosine", "constant") to
    `peak * end_ratio` at `total_steps`."""

    def __init__(self, peak, total_steps, warmup_steps=0, decay="linear", end_ratio=0.0):
        self.peak = float(peak)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)
        self.decay = decay
        self.end_ratio = float(end_ratio)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = tf.cast(self.warmup_steps, tf.float32)
        warm = self.peak * (step + 1.0) / tf.maximum(warmup, 1.0)
        progress = tf.clip_by_value((step - warmup) / tf.maximum(float(self.total_steps - self.warmup_steps), 1.0),
                                    0.0, 1.0)
        end = self.peak * self.end_ratio
        if self.decay == "linear":
            decayed = end + (self.peak - end) * (1.0 - progress)
        elif self.decay == "cosine":
            decayed = end + (self.peak - end) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        else:
            decayed = tf.constant(self.peak, tf.float32)
        return tf.where(step < warmup, warm, decayed)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "decay": self.decay, "end_ratio": self.end_ratio}


def build_schedule(schedule, peak, total_steps):
    warmup = schedule.get("warmup_steps")
    if warmup is None:
        warmup = int(round(float(schedule.get("warmup_ratio") or 0.0) * total_steps))
    return WarmupDecay(peak, total_steps, warmup, schedule.get("decay", "linear"),
                       schedule.get("end_learning_rate_ratio", 0.0))


def build_optimizer(settings, schedule, total_steps):
    learning_rate = build_schedule(schedule, settings["learning_rate"], total_steps)
    clip = {}
    if settings.get("global_clipnorm"):
        clip["global_clipnorm"] = float(settings["global_clipnorm"])
    elif settings.get("clipnorm"):
        clip["clipnorm"] = float(settings["clipnorm"])
    name = settings.get("name", "adamw")
    if name == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=settings["weight_decay"],
                                           beta_1=settings["beta_1"], beta_2=settings["beta_2"],
                                           epsilon=settings["epsilon"], **clip)
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    elif name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate, beta_1=settings["beta_1"],
                                          beta_2=settings["beta_2"], epsilon=settings["epsilon"], **clip)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, **clip)
    return optimizer
