"""Task losses with the reference's semantics, computed in float32 whatever the compute dtype.

Cross entropy ignores targets equal to `ignore_index` (-100) and averages over the rest, like
torch.nn.CrossEntropyLoss. One deliberate difference: where every target is ignored the reference returns
NaN (0/0), which would poison a training run; we return 0.
"""
import tensorflow as tf

IGNORE_INDEX = -100


def cross_entropy(logits, labels, ignore_index=IGNORE_INDEX):
    """Mean sparse cross entropy over the targets that are not `ignore_index`. logits [..., C], labels [...]."""
    logits = tf.cast(logits, tf.float32)
    num_classes = tf.shape(logits)[-1]
    logits = tf.reshape(logits, [-1, num_classes])
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    valid = tf.not_equal(labels, ignore_index)
    safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
    per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
    weights = tf.cast(valid, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(per_token * weights), tf.reduce_sum(weights))


def masked_lm_loss(labels, logits):
    return cross_entropy(logits, labels)


def causal_lm_loss(labels, logits):
    """Next-token loss: position t predicts labels[t + 1]; the last position has no target."""
    return cross_entropy(logits[:, :-1], labels[:, 1:])


def sequence_classification_loss(labels, logits, problem_type, num_labels):
    """problem_type None is inferred as the reference does: 1 label -> regression, integer labels ->
    single-label, otherwise multi-label."""
    labels = tf.convert_to_tensor(labels)
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype.is_integer:
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    logits = tf.cast(logits, tf.float32)
    if problem_type == "regression":
        labels = tf.cast(labels, tf.float32)
        if num_labels == 1:
            return tf.reduce_mean(tf.square(tf.reshape(logits, [-1]) - tf.reshape(labels, [-1])))
        return tf.reduce_mean(tf.square(logits - tf.reshape(labels, tf.shape(logits))))
    if problem_type == "single_label_classification":
        return cross_entropy(logits, labels)
    if problem_type == "multi_label_classification":
        labels = tf.cast(labels, tf.float32)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
    raise ValueError(f"Unknown problem_type {problem_type!r}")


def token_classification_loss(labels, logits, attention_mask=None):
    """Cross entropy per token; where `attention_mask` is given, padded positions are ignored."""
    if attention_mask is not None:
        labels = tf.where(tf.equal(tf.cast(attention_mask, tf.int32), 1), tf.cast(labels, tf.int32),
                          tf.fill(tf.shape(labels), IGNORE_INDEX))
    return cross_entropy(logits, labels)


def multiple_choice_loss(labels, logits):
    return cross_entropy(logits, labels)


def question_answering_loss(start_positions, end_positions, start_logits, end_logits):
    """Mean of start and end losses. Positions outside the sequence are clamped to `seq_len` and ignored."""
    seq_len = tf.shape(start_logits)[1]

    def prepare(positions):
        positions = tf.cast(positions, tf.int32)
        if positions.shape.rank is not None and positions.shape.rank > 1:
            positions = tf.reshape(positions, [-1])
        return tf.clip_by_value(positions, 0, seq_len)

    start_positions, end_positions = prepare(start_positions), prepare(end_positions)
    start_loss = cross_entropy(start_logits, start_positions, ignore_index=seq_len)
    end_loss = cross_entropy(end_logits, end_positions, ignore_index=seq_len)
    return (start_loss + end_loss) / 2.0


def semantic_segmentation_loss(labels, logits, ignore_index=255):
    """Pixel-wise cross entropy. logits [batch, classes, h, w] (channels first, as the reference returns them)
    are upsampled bilinearly (align_corners=False, as torch) to the size of labels [batch, H, W]; pixels equal
    to `ignore_index` are ignored."""
    labels = tf.convert_to_tensor(labels)
    logits = tf.transpose(tf.cast(logits, tf.float32), [0, 2, 3, 1])
    logits = tf.image.resize(logits, tf.shape(labels)[1:3], method="bilinear", antialias=False)
    return cross_entropy(logits, labels, ignore_index=ignore_index)
