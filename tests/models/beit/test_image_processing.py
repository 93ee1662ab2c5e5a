"""BeitImageProcessor against HF's (which resizes with Pillow): both our paths, numpy and TF ops, give the same
arrays bit for bit (atol 0) on images of varied sizes and layouts and on segmentation maps with and without
label reduction; the in-graph path decodes PNG and JPEG exactly as Pillow does."""
import io

import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tfmodels.models.beit import image_processing as ip

transformers = pytest.importorskip("transformers")
PIL_Image = pytest.importorskip("PIL.Image")  # the reference processor needs Pillow

SIZES = [(45, 61), (256, 256), (300, 199), (20, 30), (224, 240), (517, 333)]


def images(seed=0, sizes=SIZES):
    rng = np.random.RandomState(seed)
    out = []
    for height, width in sizes:
        base = np.linspace(0, 200, width)[None, :, None] + np.linspace(0, 50, height)[:, None, None]
        out.append(np.clip(base + rng.rand(height, width, 3) * 60, 0, 255).astype(np.uint8))
    return out


def maps(seed=0, sizes=SIZES, num_labels=12):
    rng = np.random.RandomState(seed)
    out = []
    for height, width in sizes:
        blocks = rng.randint(0, num_labels, (height // 8 + 1, width // 8 + 1))
        label = np.kron(blocks, np.ones((8, 8), np.int64))[:height, :width]
        label[: height // 5] = 255
        out.append(label.astype(np.int64))
    return out


def reference(**kwargs):
    return transformers.BeitImageProcessor(**kwargs)


def assert_equal_arrays(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("reduce_labels", [False, True])
def test_defaults_match_reference_on_both_paths(reduce_labels):
    ours = tfmodels.BeitImageProcessor(do_reduce_labels=reduce_labels)
    theirs = reference(do_reduce_labels=reduce_labels)
    batch_images, batch_maps = images(), maps()
    expected = theirs([im.copy() for im in batch_images], [m.copy() for m in batch_maps], return_tensors="np")
    got = ours(batch_images, batch_maps, return_tensors="np")
    assert_equal_arrays(got["pixel_values"], expected["pixel_values"])
    assert_equal_arrays(got["labels"], expected["labels"])
    assert got["pixel_values"].shape == (len(SIZES), 3, 224, 224) and got["labels"].dtype == np.int64
    # Pillow resizes label maps bicubically in the reference (so borders of 255 blend): we do the same.
    assert 255 in got["labels"]
    tf_got = ours.preprocess_tf([tf.constant(im) for im in batch_images], [tf.constant(m) for m in batch_maps])
    assert_equal_arrays(tf_got["pixel_values"].numpy(), expected["pixel_values"])
    assert_equal_arrays(tf_got["labels"].numpy(), expected["labels"])


@pytest.mark.parametrize("options", [
    dict(size=96, crop_size={"height": 64, "width": 80}, resample=2),
    dict(size={"height": 50, "width": 70}, do_center_crop=False, resample=0),
    dict(do_resize=False, crop_size=200, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]),
    dict(size=40, crop_size=32, resample=1, do_normalize=False),
    dict(size=40, crop_size=32, resample=4, rescale_factor=0.5, image_mean=[0.3] * 3, image_std=[0.2] * 3),
    dict(size=64, crop_size=48, resample=5, do_rescale=False),
], ids=["bilinear", "nearest-no-crop", "no-resize-pad", "lanczos", "box-scalars", "hamming"])
def test_parameters_match_reference_on_both_paths(options):
    ours, theirs = tfmodels.BeitImageProcessor(**options), reference(**options)
    sizes = SIZES[:3] if options.get("do_center_crop", True) else [(45, 61)]
    batch_images = images(1, sizes)
    expected = theirs([im.copy() for im in batch_images], return_tensors="np")["pixel_values"]
    assert_equal_arrays(ours(batch_images, return_tensors="np")["pixel_values"], expected)
    got_tf = ours.preprocess_tf([tf.constant(im) for im in batch_images])["pixel_values"].numpy()
    assert_equal_arrays(got_tf, expected)
    if len(set(options.get("image_mean", [0, 1]))) == 1:  # one number for every channel
        scalars = tfmodels.BeitImageProcessor(**{**options, "image_mean": options["image_mean"][0],
                                                 "image_std": options["image_std"][0]})
        assert_equal_arrays(scalars(batch_images, return_tensors="np")["pixel_values"], expected)


def test_input_kinds_layouts_and_output_formats():
    ours, theirs = tfmodels.BeitImageProcessor(), reference()
    image = images(2, [(120, 90)])[0]
    expected = theirs(image.copy(), return_tensors="np")["pixel_values"]
    for given in (image, np.transpose(image, (2, 0, 1)), PIL_Image.fromarray(image), tf.constant(image),
                  image.astype(np.float32), image[None]):
        assert_equal_arrays(ours(given, return_tensors="np")["pixel_values"], expected)
    # Floats in [0, 1] go through 8 bits for the resize, as in the reference.
    scaled = image.astype(np.float32) / 255.0
    assert_equal_arrays(ours(scaled, do_rescale=False, return_tensors="np")["pixel_values"],
                        theirs(scaled.copy(), do_rescale=False, return_tensors="np")["pixel_values"])
    last = ours(image, data_format="channels_last", return_tensors="np")["pixel_values"]
    assert_equal_arrays(last, np.transpose(expected, (0, 2, 3, 1)))
    as_list = ours([image, image])["pixel_values"]
    assert isinstance(as_list, list) and len(as_list) == 2
    assert isinstance(ours(image, return_tensors="tf")["pixel_values"], tf.Tensor)
    # A batch tensor on the TF path, and a single image.
    batch = tf.constant(np.stack([image, image[::-1]]))
    got = ours.preprocess_tf(batch)["pixel_values"].numpy()
    assert_equal_arrays(got, theirs([image.copy(), image[::-1].copy()], return_tensors="np")["pixel_values"])
    assert ours.preprocess_tf(tf.constant(image))["pixel_values"].shape == (1, 3, 224, 224)
    with pytest.raises(ValueError, match="height"):
        tfmodels.BeitImageProcessor(size={"shortest_edge": 224})
    with pytest.raises(ValueError, match="Unknown BeitImageProcessor parameter"):
        tfmodels.BeitImageProcessor(do_rezise=True)
    with pytest.raises(ValueError, match="outside"):
        ours(np.full((10, 10, 3), 300.0))


def test_tf_path_in_tf_function_and_tf_data():
    ours = tfmodels.BeitImageProcessor(size=48, crop_size=40)
    batch_images = images(3, [(45, 61), (70, 33)])
    expected = ours(batch_images, return_tensors="np")["pixel_values"]
    dataset = tf.data.Dataset.from_generator(lambda: iter(batch_images),
                                             output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    got = np.stack(list(dataset.map(ours.tf_preprocess_image).as_numpy_iterator()))
    assert_equal_arrays(got, expected)


def test_encoded_images_in_graph_match_pillow_decoding():
    """PNG and JPEG (4:4:4 and 4:2:0) decoded in the graph equal Pillow's decoding + the reference processor."""
    ours, theirs = tfmodels.BeitImageProcessor(size=64, crop_size=56), reference(size=64, crop_size=56)
    data = []
    for i, image in enumerate(images(4, [(45, 61), (120, 90), (33, 33)])):
        for fmt, kwargs in (("PNG", {}), ("JPEG", {"quality": 90}), ("JPEG", {"quality": 75, "subsampling": 2})):
            buffer = io.BytesIO()
            PIL_Image.fromarray(image).save(buffer, format=fmt, **kwargs)
            data.append(buffer.getvalue())
    decoded = [np.array(PIL_Image.open(io.BytesIO(d)).convert("RGB")) for d in data]
    expected = theirs(decoded, return_tensors="np")["pixel_values"]
    in_graph = ours.in_graph()
    serve = tf.function(in_graph, input_signature=[tf.TensorSpec([None], tf.string)])
    assert_equal_arrays(serve(tf.constant(data))["pixel_values"].numpy(), expected)
    # TF's default JPEG decoding (fast IDCT) would differ from Pillow's by several levels: we use the accurate one.
    fast = tf.io.decode_jpeg(data[1], channels=3).numpy()
    assert np.abs(fast.astype(int) - decoded[1]).max() > 0


def test_resampling_is_pillow_exact_for_every_filter_and_pass_order():
    rng = np.random.RandomState(5)
    cases = [(37, 53, 31, 97), (68, 119, 4, 76), (64, 20, 40, 12), (20, 20, 15, 12), (10, 7, 33, 2), (9, 9, 9, 4)]
    for in_h, in_w, out_h, out_w in cases:
        for channels in (1, 3):
            image = rng.randint(0, 256, (in_h, in_w, channels)).astype(np.uint8)
            pil = PIL_Image.fromarray(image[:, :, 0] if channels == 1 else image)
            for resample in (0, 1, 2, 3, 4, 5):
                expected = np.array(pil.resize((out_w, out_h), resample=resample)).reshape(out_h, out_w, channels)
                np.testing.assert_array_equal(ip.pil_resize(image, (out_h, out_w), resample), expected)
                np.testing.assert_array_equal(
                    ip.pil_resize_tf(tf.constant(image), (out_h, out_w), resample).numpy().astype(np.uint8), expected)


def test_config_round_trip_with_reference(tmp_path):
    ours = tfmodels.BeitImageProcessor(size=300, crop_size=256, do_reduce_labels=True, resample="bilinear")
    ours.save_pretrained(str(tmp_path / "ours"))
    theirs = transformers.BeitImageProcessor.from_pretrained(str(tmp_path / "ours"))
    assert (theirs.size, theirs.crop_size, theirs.do_reduce_labels, int(theirs.resample)) == \
        ({"height": 300, "width": 300}, {"height": 256, "width": 256}, True, 2)
    reference(size=128, crop_size=96, image_mean=[0.1, 0.2, 0.3]).save_pretrained(str(tmp_path / "theirs"))
    again = tfmodels.BeitImageProcessor.from_pretrained(str(tmp_path / "theirs"))
    assert (again.size, again.crop_size, again.image_mean, again.resample) == \
        ({"height": 128, "width": 128}, {"height": 96, "width": 96}, [0.1, 0.2, 0.3], 3)
    legacy = tfmodels.BeitImageProcessor.from_dict({"reduce_labels": True, "feature_extractor_type": "x"})
    assert legacy.do_reduce_labels


def test_post_process_semantic_segmentation_matches_reference():
    torch = pytest.importorskip("torch")
    logits = np.random.RandomState(6).randn(2, 5, 8, 12).astype(np.float32)

    class Output:
        pass

    reference_output = Output()
    reference_output.logits = torch.tensor(logits)
    expected = reference().post_process_semantic_segmentation(reference_output, target_sizes=[(20, 30), (7, 9)])
    got = tfmodels.BeitImageProcessor().post_process_semantic_segmentation(
        tfmodels.SemanticSegmenterOutput(logits=tf.constant(logits)), target_sizes=[(20, 30), (7, 9)])
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    plain = tfmodels.BeitImageProcessor().post_process_semantic_segmentation(tf.constant(logits))
    np.testing.assert_array_equal(plain[0].numpy(), logits[0].argmax(0))
