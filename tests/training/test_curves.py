"""`tfmodels train`'s curves.png (tfmodels.training.callbacks.TrainingCurves): drawn from the CSV log after every
epoch, train and validation for the loss and each metric; without matplotlib one warning and no picture."""
import logging
import sys

import keras
import numpy as np

from tfmodels.core.logging import logger
from tfmodels.training import callbacks as cb


def fit_with_logs(folder, epochs=3, validation_freq=1):
    """A real Keras fit with the job's CSV log and the curves callback after it."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 2, 64)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    csv_path = str(folder / "history.csv")
    curves = cb.TrainingCurves(csv_path, "tiny run")
    history = model.fit(x, y, validation_data=(x[:16], y[:16]), epochs=epochs, batch_size=16, verbose=0,
                        validation_freq=validation_freq, callbacks=[keras.callbacks.CSVLogger(csv_path), curves])
    return csv_path, curves, history.history


def test_fit_writes_curves_png_with_train_and_validation_of_every_quantity(tmp_path):
    import matplotlib.image
    csv_path, curves, history = fit_with_logs(tmp_path)
    assert curves.path == str(tmp_path / "curves.png")
    pixels = matplotlib.image.imread(curves.path)
    assert pixels.shape[:2] == (360, 900) and pixels.std() > 0  # two panels of 4.5 x 3.6 in at 100 dpi

    logged = cb.read_history(csv_path)
    assert logged["epoch"] == [0.0, 1.0, 2.0]
    np.testing.assert_allclose(logged["val_loss"], history["val_loss"], rtol=1e-5)
    figure = cb.curves_figure(logged, "tiny run")
    assert [a.get_ylabel() for a in figure.axes] == ["loss", "accuracy"]
    for axis in figure.axes:
        assert axis.get_xlabel() == "epoch"
        lines = {line.get_label(): line for line in axis.get_lines()}
        assert set(lines) == {"train", "validation"}
        name = axis.get_ylabel()
        np.testing.assert_allclose(lines["train"].get_ydata(), history[name], rtol=1e-5)
        np.testing.assert_allclose(lines["validation"].get_ydata(), history[f"val_{name}"], rtol=1e-5)
        assert list(lines["train"].get_xdata()) == [1, 2, 3]
        assert [t.get_text() for t in axis.get_legend().get_texts()] == ["train", "validation"]


def test_epochs_without_validation_are_gaps_in_the_curves(tmp_path):
    """Keras' CSVLogger writes "NA" for a column an epoch did not log (validation on the first epoch only)."""
    import matplotlib.image
    csv_path, curves, history = fit_with_logs(tmp_path, validation_freq=[1])
    with open(csv_path) as f:
        assert ",NA" in f.read()
    logged = cb.read_history(csv_path)
    assert np.isfinite(logged["val_loss"][0]) and np.isnan(logged["val_loss"][1:]).all()
    np.testing.assert_allclose(logged["loss"], history["loss"], rtol=1e-5)
    assert matplotlib.image.imread(curves.path).std() > 0


def test_without_matplotlib_one_warning_names_the_extra_and_training_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    warnings = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger.addHandler(handler)
    try:
        _, curves, history = fit_with_logs(tmp_path, epochs=2)
    finally:
        logger.removeHandler(handler)
    assert len(history["loss"]) == 2 and not (tmp_path / "curves.png").exists()
    assert len(warnings) == 1 and "matplotlib is not installed" in warnings[0] and "tfmodels[plot]" in warnings[0]
