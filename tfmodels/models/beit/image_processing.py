"""BEiT image processor (HF `BeitImageProcessor`): resize, center crop, rescale, normalize, and for
segmentation maps label reduction, resize and crop.

Two paths with the same results:
- numpy (`processor(images, segmentation_maps)`): numpy arrays (HWC or CHW, uint8 or float), PIL images or
  tensors, one image or a batch, images of different sizes;
- TensorFlow (`processor.preprocess_tf(...)` and `processor.in_graph()`): core TF ops only, so it runs inside
  tf.data and inside an exported SavedModel, where `in_graph()` decodes encoded images (JPEG, PNG, GIF, BMP).

The reference resizes with Pillow (8-bit images, bicubic by default). Both paths reproduce Pillow's
resampling exactly instead of approximating it: the same separable filters (nearest, box, bilinear, hamming,
bicubic, lanczos), the same support and coefficient normalisation, the same 22-bit fixed-point coefficients,
rounding and clipping to uint8 after the horizontal and after the vertical pass. Each pass is one matrix
product over exact integers (in float64, exact below 2**53), so the outputs equal Pillow's bit for bit.
Pillow is not needed (PIL images are accepted when it is installed).
"""
import copy
import functools
import json
import logging
import math
import os

import numpy as np
import tensorflow as tf

logger = logging.getLogger("tfmodels")

IMAGENET_STANDARD_MEAN = [0.5, 0.5, 0.5]
IMAGENET_STANDARD_STD = [0.5, 0.5, 0.5]
IMAGE_PROCESSOR_NAME = "preprocessor_config.json"

# Pillow's resampling filter ids (PIL.Image.Resampling).
NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING = 0, 1, 2, 3, 4, 5
_FILTER_NAMES = {"nearest": NEAREST, "lanczos": LANCZOS, "bilinear": BILINEAR, "bicubic": BICUBIC, "box": BOX,
                 "hamming": HAMMING}
_PRECISION_BITS = 22  # Pillow: 32 - 8 - 2
_HALF = float(1 << (_PRECISION_BITS - 1))
_ONE = float(1 << _PRECISION_BITS)
_HAMMING_A = float(np.float32(0.54))  # Pillow writes these constants as C floats
_HAMMING_B = float(np.float32(0.46))


# ---------------------------------------------------------------------------------------------------------------
# Pillow's filters, evaluated with the same operations in numpy (xp=np) or TF (xp=tf); x is float64.


def _where(xp, condition, a, b):
    return np.where(condition, a, b) if xp is np else tf.where(condition, a, b)


def _filter_values(resample, x, xp):
    if resample == BOX:
        return _where(xp, (x > -0.5) & (x <= 0.5), 1.0 + 0.0 * x, 0.0 * x)
    if resample == BILINEAR:
        ax = xp.abs(x)
        return _where(xp, ax < 1.0, 1.0 - ax, 0.0 * x)
    if resample == BICUBIC:
        a = -0.5
        ax = xp.abs(x)
        near = ((a + 2.0) * ax - (a + 3.0)) * ax * ax + 1
        far = (((ax - 5) * ax + 8) * ax - 4) * a
        return _where(xp, ax < 1.0, near, _where(xp, ax < 2.0, far, 0.0 * x))
    sin = np.sin if xp is np else tf.sin
    cos = np.cos if xp is np else tf.cos
    if resample == HAMMING:
        ax = xp.abs(x)
        px = ax * math.pi
        safe = _where(xp, ax == 0.0, 1.0 + 0.0 * x, px)
        value = sin(safe) / safe * (_HAMMING_A + _HAMMING_B * cos(safe))
        return _where(xp, ax == 0.0, 1.0 + 0.0 * x, _where(xp, ax >= 1.0, 0.0 * x, value))
    if resample == LANCZOS:
        def sinc(v):
            safe = _where(xp, v == 0.0, 1.0 + 0.0 * v, v * math.pi)
            return _where(xp, v == 0.0, 1.0 + 0.0 * v, sin(safe) / safe)
        return _where(xp, (x >= -3.0) & (x < 3.0), sinc(x) * sinc(x / 3), 0.0 * x)
    raise ValueError(f"Unsupported resampling filter {resample!r}")


_SUPPORT = {BOX: 0.5, BILINEAR: 1.0, HAMMING: 1.0, BICUBIC: 2.0, LANCZOS: 3.0}


def _fixed_point(k, xp):
    """Pillow's normalize_coeffs_8bpc: (int)(k * 2**22 +- 0.5), truncating toward zero."""
    scaled = k * _ONE
    if xp is np:
        return np.trunc(np.where(k < 0, scaled - 0.5, scaled + 0.5))
    return tf.where(k < 0, tf.math.ceil(scaled - 0.5), tf.floor(scaled + 0.5))


@functools.lru_cache(maxsize=128)
def pil_resample_matrix(in_size, out_size, resample):
    """[out_size, in_size] float64 matrix of Pillow's fixed-point coefficients (integers) for one axis."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _SUPPORT[resample] * filterscale
    matrix = np.zeros((out_size, in_size), np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        weights = _filter_values(resample, (np.arange(xmax) + xmin - center + 0.5) * (1.0 / filterscale), np)
        total = 0.0
        for w in weights:  # Pillow sums sequentially
            total += w
        if total != 0.0:
            weights = weights / total
        matrix[xx, xmin:xmin + xmax] = _fixed_point(weights, np)
    return matrix


def _pil_resample_matrix_tf(in_size, out_size, resample):
    in_f, out_f = tf.cast(in_size, tf.float64), tf.cast(out_size, tf.float64)
    scale = in_f / out_f
    filterscale = tf.maximum(scale, 1.0)
    support = _SUPPORT[resample] * filterscale
    center = (tf.range(out_f, dtype=tf.float64) + 0.5) * scale
    xmin = tf.maximum(_trunc(center - support + 0.5), 0.0)
    xmax = tf.minimum(_trunc(center + support + 0.5), in_f)
    j = tf.range(in_f, dtype=tf.float64)[None, :]
    inside = (j >= xmin[:, None]) & (j < xmax[:, None])
    weights = _filter_values(resample, (j - center[:, None] + 0.5) * (1.0 / filterscale), tf)
    weights = tf.where(inside, weights, 0.0)
    total = tf.reduce_sum(weights, axis=1, keepdims=True)
    weights = tf.where(total != 0.0, weights / tf.where(total != 0.0, total, 1.0), weights)
    return _fixed_point(weights, tf)


def _trunc(x):
    return tf.where(x < 0, tf.math.ceil(x), tf.floor(x))


def _nearest_indices(in_size, out_size, xp):
    """Pillow's nearest resize (ImagingScaleAffine): positions accumulated by repeated addition, truncated."""
    if xp is np:
        step = in_size / out_size
        steps = np.full(out_size, step)
        steps[0] = step * 0.5
        return np.minimum(np.cumsum(steps).astype(np.int64), in_size - 1)
    step = tf.cast(in_size, tf.float64) / tf.cast(out_size, tf.float64)
    steps = tf.concat([[step * 0.5], tf.fill([out_size - 1], step)], axis=0)
    return tf.minimum(tf.cast(tf.cumsum(steps), tf.int32), in_size - 1)


def _round_and_clip(sums, xp):
    value = xp.floor((sums + _HALF) / _ONE)
    return xp.clip(value, 0.0, 255.0) if xp is np else tf.clip_by_value(value, 0.0, 255.0)


def pil_resize(image, size, resample=BICUBIC):
    """Resize an HWC (or HW) uint8-valued numpy image to size=(height, width) exactly as Pillow does."""
    height, width = size
    squeeze = image.ndim == 2
    x = image[:, :, None] if squeeze else image
    in_h, in_w = x.shape[:2]
    if (in_h, in_w) == (height, width):
        result = x.astype(np.uint8)
    elif resample == NEAREST:
        result = x[_nearest_indices(in_h, height, np)][:, _nearest_indices(in_w, width, np)].astype(np.uint8)
    else:
        x = x.astype(np.float64)

        def horizontal(v):
            if in_w == width:
                return v
            return _round_and_clip(np.einsum("hwc,ow->hoc", v, pil_resample_matrix(in_w, width, resample)), np)

        def vertical(v):
            if in_h == height:
                return v
            return _round_and_clip(np.einsum("hwc,oh->owc", v, pil_resample_matrix(in_h, height, resample)), np)

        x = vertical(horizontal(x)) if _horizontal_first(in_h, in_w, height, width) else horizontal(vertical(x))
        result = x.astype(np.uint8)
    return result[:, :, 0] if squeeze else result


def pil_resize_tf(image, size, resample=BICUBIC):
    """pil_resize in TF ops: image [height, width, channels] with values in 0..255 (any dtype), dynamic sizes
    allowed. Returns float32 values in 0..255 (integers)."""
    height, width = size
    in_h, in_w = tf.shape(image)[0], tf.shape(image)[1]
    if resample == NEAREST:
        rows = _nearest_indices(in_h, height, tf)
        cols = _nearest_indices(in_w, width, tf)
        return tf.cast(tf.gather(tf.gather(image, rows, axis=0), cols, axis=1), tf.float32)
    x = tf.cast(image, tf.float64)
    # A pass between equal sizes has identity coefficients, so both passes always run (the same result as
    # Pillow skipping them); only their order depends on the sizes.
    columns = _pil_resample_matrix_tf(in_w, width, resample)
    rows = _pil_resample_matrix_tf(in_h, height, resample)

    def horizontal(v):
        return _round_and_clip(tf.einsum("hwc,ow->hoc", v, columns), tf)

    def vertical(v):
        return _round_and_clip(tf.einsum("hwc,oh->owc", v, rows), tf)

    x = tf.cond(_horizontal_first(in_h, in_w, height, width), lambda: vertical(horizontal(x)),
                lambda: horizontal(vertical(x)))
    return tf.cast(x, tf.float32)


def _horizontal_first(in_h, in_w, out_h, out_w):
    """Pillow (>= 10.4) runs the vertical pass first when the height shrinks by more than twice as many pixels
    as the width does (the passes round to uint8 in between, so the order shows in the result)."""
    shrink_h, shrink_w = in_h - out_h, in_w - out_w
    if _all_python_ints(in_h, in_w, out_h, out_w):
        return not (shrink_h > 0 and shrink_h > shrink_w * 2)
    return tf.logical_not(tf.logical_and(shrink_h > 0, shrink_h > shrink_w * 2))


def _all_python_ints(*values):
    return all(isinstance(v, (int, np.integer)) for v in values)


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared by both paths


def get_size_dict(size, param_name="size"):
    """{"height": h, "width": w} from an int (square), an (h, w) pair or such a dict."""
    if isinstance(size, dict):
        if set(size) != {"height", "width"}:
            raise ValueError(f"{param_name} must have the keys 'height' and 'width' (BEiT resizes and crops to an "
                             f"exact size), got {sorted(size)}")
        out = {"height": size["height"], "width": size["width"]}
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        out = {"height": int(size), "width": int(size)}
    elif isinstance(size, (list, tuple)) and len(size) == 2:
        out = {"height": size[0], "width": size[1]}
    else:
        raise ValueError(f"{param_name} must be an int, an (height, width) pair or a dict, got {size!r}")
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 for v in out.values()):
        raise ValueError(f"{param_name} sizes must be positive integers, got {size!r}")
    return {k: int(v) for k, v in out.items()}


def _resample_id(resample):
    if isinstance(resample, str):
        if resample.lower() not in _FILTER_NAMES:
            raise ValueError(f"Unknown resample {resample!r}; use one of {sorted(_FILTER_NAMES)} or Pillow's ids")
        return _FILTER_NAMES[resample.lower()]
    value = int(getattr(resample, "value", resample))
    if value not in (NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING):
        raise ValueError(f"Unsupported resampling filter {resample!r} (Pillow ids 0-5)")
    return value


def _crop_box(in_size, crop):
    """Center crop (the reference's, with zero padding when the image is smaller): (pad_before, pad_after,
    start) along one axis, after which [start, start + crop) is taken."""
    new = max(crop, in_size)
    pad_before = int(math.ceil((new - in_size) / 2))
    return pad_before, new - in_size - pad_before, (in_size - crop) // 2 + pad_before


def _center_crop_np(image, crop_height, crop_width):
    """image [H, W, ...]."""
    (top_b, top_a, top), (left_b, left_a, left) = _crop_box(image.shape[0], crop_height), \
        _crop_box(image.shape[1], crop_width)
    if top_b or top_a or left_b or left_a:
        pad = [(top_b, top_a), (left_b, left_a)] + [(0, 0)] * (image.ndim - 2)
        image = np.pad(image, pad)
    return image[top:top + crop_height, left:left + crop_width]


def _center_crop_tf(image, crop_height, crop_width):
    """image [H, W, C] with dynamic sizes."""
    def box(in_size, crop):
        new = tf.maximum(crop, in_size)
        before = (new - in_size + 1) // 2
        return before, new - in_size - before, tf.math.floordiv(in_size - crop, 2) + before

    (top_b, top_a, top), (left_b, left_a, left) = box(tf.shape(image)[0], crop_height), \
        box(tf.shape(image)[1], crop_width)
    image = tf.pad(image, [[top_b, top_a], [left_b, left_a], [0, 0]])
    return image[top:top + crop_height, left:left + crop_width]


def _infer_channels_first(image, num_channels=(1, 3)):
    """The reference's infer_channel_dimension_format for a 3-D image (channels first wins ties)."""
    if image.shape[0] in num_channels:
        return True
    if image.shape[-1] in num_channels:
        return False
    raise ValueError(f"Unable to infer the channel dimension of an image of shape {image.shape}")


def _to_numpy(image):
    if isinstance(image, np.ndarray):
        return image
    if tf.is_tensor(image):
        return image.numpy()
    if hasattr(image, "detach"):  # torch
        return image.detach().cpu().numpy()
    if type(image).__module__.startswith("PIL."):
        return np.array(image)
    return np.asarray(image)


def _is_image_like(value):
    return isinstance(value, np.ndarray) or tf.is_tensor(value) or hasattr(value, "detach") or \
        type(value).__module__.startswith("PIL.")


def _flat_list(images, expected_ndims, what):
    """One image, a list of images or a batch array -> a list of numpy images. Images (expected_ndims 3) may be
    HWC, CHW or HW; segmentation maps (expected_ndims 2) HW, or HW1 / 1HW."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError(f"No {what} given")
        return [image for item in images for image in _flat_list(item, expected_ndims, what)]
    if not _is_image_like(images):
        raise ValueError(f"Invalid {what} type {type(images).__name__}: pass numpy arrays, tensors or PIL images")
    array = _to_numpy(images)
    if array.ndim == expected_ndims + 1:
        return list(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"Each of the {what} must have 2 or 3 dimensions (or a batch of them), got {array.shape}")
    return [array]


def _to_uint8_for_resize(image):
    """The reference's conversion before Pillow: uint8 stays; integer values in 0..255 are cast; floats in
    [0, 1] are multiplied by 255 and truncated (and divided back after resizing)."""
    if image.dtype == np.uint8:
        return image, False
    if np.allclose(image, image.astype(int)):
        if np.all(image >= 0) and np.all(image <= 255):
            return image.astype(np.uint8), False
        raise ValueError(f"The image contains values outside [0, 255] (got [{image.min()}, {image.max()}]): "
                         "it cannot be resized as an 8-bit image")
    if np.all(image >= 0) and np.all(image <= 1):
        return (image.astype(np.float64) * 255).astype(np.float32).astype(np.uint8), True
    raise ValueError(f"The image contains values outside [0, 1] (got [{image.min()}, {image.max()}]) that are not "
                     "integers: it cannot be resized as an 8-bit image")


def _mean_or_std(value, default):
    if value is None:
        return list(default)
    return list(value) if isinstance(value, (list, tuple, np.ndarray)) else float(value)


class BatchFeature(dict):
    """The processor's output: a dict with attribute access (`batch.pixel_values`)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _convert(values, return_tensors, dtype=None):
    if return_tensors is None:
        return values
    if return_tensors in ("np", "numpy"):
        return np.stack(values)
    if return_tensors in ("tf", "tensorflow"):
        return tf.constant(np.stack(values))
    raise ValueError(f"return_tensors must be None, 'np' or 'tf', got {return_tensors!r}")


# ---------------------------------------------------------------------------------------------------------------


class BeitImageProcessor:
    """Constructs a BEiT image processor, with the reference's parameters and defaults.

    do_resize (True), size ({"height": 256, "width": 256}), resample (3: bicubic; Pillow's ids or names),
    do_center_crop (True), crop_size ({"height": 224, "width": 224}; smaller images are zero-padded first),
    rescale_factor (1/255), do_rescale (True), do_normalize (True), image_mean / image_std ([0.5] * 3),
    do_reduce_labels (False: when True, segmentation label 0 (background) becomes 255 and every other label
    is reduced by 1).
    """

    model_input_names = ["pixel_values"]
    _keys = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "rescale_factor", "do_rescale",
             "do_normalize", "image_mean", "image_std", "do_reduce_labels")
    _hf_bookkeeping = {"image_processor_type", "feature_extractor_type", "processor_class", "_processor_class",
                       "auto_map"}

    def __init__(self, do_resize=True, size=None, resample=BICUBIC, do_center_crop=True, crop_size=None,
                 rescale_factor=1 / 255, do_rescale=True, do_normalize=True, image_mean=None, image_std=None,
                 do_reduce_labels=False, **kwargs):
        if "reduce_labels" in kwargs:  # the reference's deprecated name
            do_reduce_labels = kwargs.pop("reduce_labels")
        unknown = [k for k in kwargs if k not in self._hf_bookkeeping]
        if unknown:
            raise ValueError(f"Unknown BeitImageProcessor parameter(s) {unknown}; parameters: {', '.join(self._keys)}")
        self.do_resize = do_resize
        self.size = get_size_dict(size if size is not None else {"height": 256, "width": 256})
        self.resample = _resample_id(resample)
        self.do_center_crop = do_center_crop
        self.crop_size = get_size_dict(crop_size if crop_size is not None else {"height": 224, "width": 224},
                                       "crop_size")
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        # A number applies to every channel, a list gives one value per channel (as the reference).
        self.image_mean = _mean_or_std(image_mean, IMAGENET_STANDARD_MEAN)
        self.image_std = _mean_or_std(image_std, IMAGENET_STANDARD_STD)
        self.do_reduce_labels = do_reduce_labels

    # -----------------------------------------------------------------------------------------------------
    # Configuration

    def to_dict(self):
        out = {key: copy.deepcopy(getattr(self, key)) for key in self._keys}
        out["image_processor_type"] = type(self).__name__
        return out

    @classmethod
    def from_dict(cls, config, **overrides):
        return cls(**{**config, **overrides})

    def save_pretrained(self, directory):
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, IMAGE_PROCESSOR_NAME)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
        return path

    @classmethod
    def from_pretrained(cls, path, revision=None, cache_dir=None, local_files_only=False, token=None, **overrides):
        """From a directory holding preprocessor_config.json (ours or HF's), from that JSON file, or from a Hub
        id ("org/name", fetched through huggingface_hub: see core.hub)."""
        from tfmodels.core import hub
        options = hub.HubOptions(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                                 token=token)
        if not os.path.isfile(path):
            path = hub.resolve_file(path, IMAGE_PROCESSOR_NAME, options)
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f), **overrides)

    def __repr__(self):
        return f"{type(self).__name__} {json.dumps(self.to_dict(), sort_keys=True)}"

    def _options(self, **given):
        options = {key: given[key] if given.get(key) is not None else getattr(self, key) for key in self._keys}
        options["size"] = get_size_dict(options["size"])
        options["crop_size"] = get_size_dict(options["crop_size"], "crop_size")
        options["resample"] = _resample_id(options["resample"])
        if options["do_rescale"] and options["rescale_factor"] is None:
            raise ValueError("rescale_factor must be given when do_rescale is True")
        if options["do_normalize"] and (options["image_mean"] is None or options["image_std"] is None):
            raise ValueError("image_mean and image_std must be given when do_normalize is True")
        return options

    # -----------------------------------------------------------------------------------------------------
    # numpy path

    def __call__(self, images, segmentation_maps=None, **kwargs):
        return self.preprocess(images, segmentation_maps=segmentation_maps, **kwargs)

    def preprocess(self, images, segmentation_maps=None, do_resize=None, size=None, resample=None,
                   do_center_crop=None, crop_size=None, do_rescale=None, rescale_factor=None, do_normalize=None,
                   image_mean=None, image_std=None, do_reduce_labels=None, return_tensors=None,
                   data_format="channels_first", input_data_format=None):
        """Images (values 0..255, or floats in [0, 1] with do_rescale=False) -> {"pixel_values": ...} and, with
        segmentation maps, "labels" (int64). return_tensors: None (lists of arrays), "np" or "tf".
        data_format: "channels_first" (default, as the reference) or "channels_last"; input_data_format:
        "channels_first" / "channels_last" / None (inferred: channels first when axis 0 has 1 or 3 entries)."""
        options = self._options(do_resize=do_resize, size=size, resample=resample, do_center_crop=do_center_crop,
                                crop_size=crop_size, do_rescale=do_rescale, rescale_factor=rescale_factor,
                                do_normalize=do_normalize, image_mean=image_mean, image_std=image_std,
                                do_reduce_labels=do_reduce_labels)
        if data_format not in ("channels_first", "channels_last"):
            raise ValueError(f"data_format must be 'channels_first' or 'channels_last', got {data_format!r}")
        pixel_values = [self._preprocess_image(image, options, data_format, input_data_format)
                        for image in _flat_list(images, 3, "images")]
        data = BatchFeature(pixel_values=_convert(pixel_values, return_tensors))
        if segmentation_maps is not None:
            maps = [self._preprocess_segmentation_map(m, options) for m in _flat_list(segmentation_maps, 2,
                                                                                      "segmentation_maps")]
            if len(maps) != len(pixel_values):
                raise ValueError(f"Got {len(pixel_values)} images but {len(maps)} segmentation maps")
            data["labels"] = _convert(maps, return_tensors)
        return data

    def _preprocess_image(self, image, options, data_format, input_data_format):
        if image.ndim == 2:
            image = image[:, :, None]
            channels_first = False
        elif input_data_format is None:
            channels_first = _infer_channels_first(image)
        else:
            channels_first = input_data_format in ("channels_first", "first")
        if channels_first:
            image = np.transpose(image, (1, 2, 0))
        if options["do_rescale"] and image.dtype.kind == "f" and image.size and image.min() >= 0 and \
                image.max() <= 1:
            logger.warning("It looks like you are trying to rescale already rescaled images (values in [0, 1]); "
                           "set do_rescale=False to avoid rescaling them again.")
        image = self._transform(image, options)
        if options["do_rescale"]:
            image = (image.astype(np.float64) * options["rescale_factor"]).astype(np.float32)
        if options["do_normalize"]:
            if image.dtype.kind != "f":
                image = image.astype(np.float32)
            channels = image.shape[-1]
            mean, std = (self._per_channel(options[k], channels, k) for k in ("image_mean", "image_std"))
            image = (image - np.array(mean, image.dtype)) / np.array(std, image.dtype)
        return np.transpose(image, (2, 0, 1)) if data_format == "channels_first" else image

    @staticmethod
    def _per_channel(value, channels, name):
        if isinstance(value, (list, tuple)):
            if len(value) != channels:
                raise ValueError(f"{name} must have {channels} elements (one per channel), got {len(value)}")
            return list(value)
        return [value] * channels

    def _transform(self, image, options):
        """Resize and center crop an HWC image (values unchanged otherwise)."""
        if options["do_resize"]:
            pixels, rescaled = _to_uint8_for_resize(image)
            size = options["size"]
            image = pil_resize(pixels, (size["height"], size["width"]), options["resample"])
            if rescaled:
                image = (image.astype(np.float64) * (1 / 255)).astype(np.float32)
        if options["do_center_crop"]:
            crop = options["crop_size"]
            image = _center_crop_np(image, crop["height"], crop["width"])
        return image

    @staticmethod
    def reduce_label(label):
        """0 (background) -> 255, other labels -1 (255 stays 255)."""
        label = np.array(label, copy=True).astype(np.int64)
        label = np.where(label == 0, 255, label) - 1
        return np.where(label == 254, 255, label)

    def _preprocess_segmentation_map(self, segmentation_map, options):
        segmentation_map = np.asarray(segmentation_map)
        if segmentation_map.ndim == 3:  # a single-channel map
            channels_first = _infer_channels_first(segmentation_map, (1,))
            segmentation_map = segmentation_map[0] if channels_first else segmentation_map[:, :, 0]
        if options["do_reduce_labels"]:
            segmentation_map = self.reduce_label(segmentation_map)
        segmentation_map = self._transform(segmentation_map[:, :, None], options)[:, :, 0]
        return segmentation_map.astype(np.int64)

    def post_process_semantic_segmentation(self, outputs, target_sizes=None):
        """Segmentation logits [batch, num_labels, h, w] (or a model output with .logits) -> a list of [H, W]
        int64 maps of class ids, each resized bilinearly to its target (height, width) when given."""
        from tfmodels.core.image_ops import interpolate_bilinear
        logits = outputs.logits if hasattr(outputs, "logits") and outputs.logits is not None else outputs
        logits = tf.convert_to_tensor(logits)
        if target_sizes is not None and len(target_sizes) != logits.shape[0]:
            raise ValueError("Make sure that you pass in as many target sizes as the batch dimension of the logits")
        maps = []
        for i in range(logits.shape[0]):
            item = tf.transpose(logits[i:i + 1], [0, 2, 3, 1])
            if target_sizes is not None:
                item = interpolate_bilinear(item, tuple(int(s) for s in target_sizes[i]))
            maps.append(tf.argmax(item[0], axis=-1))
        return maps

    # -----------------------------------------------------------------------------------------------------
    # TensorFlow path

    def preprocess_tf(self, images, segmentation_maps=None, data_format="channels_first", **kwargs):
        """The TF-ops path. images: one [H, W, C] tensor, a batch [B, H, W, C], or a list of [H, W, C] tensors of
        different sizes (uint8, or any dtype with values 0..255); segmentation_maps likewise [H, W] ([B, H, W]).
        Returns {"pixel_values": [B, C, h, w] float32 (channels_first) or [B, h, w, C], "labels": [B, h, w]
        int64}. Works eagerly, in tf.function and tf.data; the output size must be fixed by resize or crop."""
        options = self._options(**kwargs)
        single = lambda image: self.tf_preprocess_image(image, data_format=data_format, **kwargs)  # noqa: E731
        pixel_values = self._map_tf(single, images, 3, tf.float32)
        data = BatchFeature(pixel_values=pixel_values)
        if segmentation_maps is not None:
            data["labels"] = self._map_tf(lambda m: self._tf_segmentation_map(m, options), segmentation_maps, 2,
                                          tf.int64)
        return data

    @staticmethod
    def _map_tf(fn, values, rank, dtype):
        if isinstance(values, (list, tuple)):
            return tf.stack([fn(tf.convert_to_tensor(v)) for v in values])
        values = tf.convert_to_tensor(values)
        if values.shape.rank == rank:
            return fn(values)[None]
        if values.shape.rank != rank + 1:
            raise ValueError(f"Expected a tensor of rank {rank} or a batch of rank {rank + 1}, got {values.shape}")
        return tf.map_fn(fn, values, fn_output_signature=dtype)

    def _fixed_output_size(self, options):
        if options["do_center_crop"]:
            return options["crop_size"]["height"], options["crop_size"]["width"]
        if options["do_resize"]:
            return options["size"]["height"], options["size"]["width"]
        return None

    def _tf_transform(self, image, options):
        """Resize and crop an [H, W, C] tensor; returns float32 (uint8 values after a resize)."""
        if options["do_resize"]:
            size = options["size"]
            image = pil_resize_tf(image, (size["height"], size["width"]), options["resample"])
        image = tf.cast(image, tf.float32) if not image.dtype.is_floating else image
        if options["do_center_crop"]:
            crop = options["crop_size"]
            image = _center_crop_tf(image, crop["height"], crop["width"])
        return image

    def tf_preprocess_image(self, image, data_format="channels_first", **kwargs):
        """One image [H, W, C] (values 0..255) -> float32 [C, h, w] (or [h, w, C]) with core TF ops."""
        options = self._options(**kwargs)
        image = tf.convert_to_tensor(image)
        if image.shape.rank == 2:
            image = image[:, :, None]
        image = self._tf_transform(image, options)
        if options["do_rescale"]:
            image = tf.cast(tf.cast(image, tf.float64) * options["rescale_factor"], tf.float32)
        if options["do_normalize"]:
            channels = image.shape[-1]
            if channels is None:
                raise ValueError("The channel count of images must be static in the TF path")
            mean, std = (self._per_channel(options[k], channels, k) for k in ("image_mean", "image_std"))
            image = (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
        fixed = self._fixed_output_size(options)
        if fixed is not None:
            image = tf.ensure_shape(image, [fixed[0], fixed[1], image.shape[-1]])
        return tf.transpose(image, [2, 0, 1]) if data_format == "channels_first" else image

    def _tf_segmentation_map(self, segmentation_map, options):
        segmentation_map = tf.cast(tf.convert_to_tensor(segmentation_map), tf.int64)
        if options["do_reduce_labels"]:
            segmentation_map = tf.where(segmentation_map == 0, tf.constant(255, tf.int64), segmentation_map) - 1
            segmentation_map = tf.where(segmentation_map == 254, tf.constant(255, tf.int64), segmentation_map)
        if options["do_resize"]:
            check = tf.debugging.assert_less_equal(segmentation_map, tf.constant(255, tf.int64),
                                                   message="segmentation labels must be in 0..255 to be resized")
            with tf.control_dependencies([check] if check is not None else []):
                segmentation_map = tf.identity(segmentation_map)
        image = self._tf_transform(segmentation_map[:, :, None], options)
        return tf.cast(image[:, :, 0], tf.int64)

    def in_graph(self, data_format="channels_first"):
        """A tf.Module that turns encoded images [batch] (JPEG, PNG, GIF, BMP bytes) into {"pixel_values": ...},
        with core TF ops only: what `model.export(path, image_processor=processor)` puts in the SavedModel.
        Images are decoded to RGB (num_channels 3; grayscale is expanded, alpha dropped); JPEG with the accurate
        integer IDCT, as Pillow decodes it."""
        return BeitImageProcessorInGraph(self, data_format)


class BeitImageProcessorInGraph(tf.Module):
    def __init__(self, processor, data_format="channels_first"):
        super().__init__(name="beit_image_processor")
        self.options = processor._options()
        if processor._fixed_output_size(self.options) is None:
            raise ValueError("A batched image signature needs a fixed output size: enable do_resize or "
                             "do_center_crop")
        self._processor = processor
        self.data_format = data_format

    @staticmethod
    def decode(image_bytes):
        """Encoded bytes -> uint8 [H, W, 3]."""
        def jpeg():
            return tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE")

        def other():
            return tf.io.decode_image(image_bytes, channels=3, expand_animations=False, dtype=tf.uint8)

        image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
        image.set_shape([None, None, 3])
        return image

    def preprocess_image(self, image):
        return self._processor.tf_preprocess_image(image, data_format=self.data_format)

    def __call__(self, image_bytes):
        pixel_values = tf.map_fn(lambda data: self.preprocess_image(self.decode(data)), image_bytes,
                                 fn_output_signature=tf.float32)
        return {"pixel_values": pixel_values}
