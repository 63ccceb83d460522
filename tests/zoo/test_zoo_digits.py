"""The digits CNN on real data: split, training, cache, PTQ (FX and eager) and QAT accuracy."""

from __future__ import annotations

import torch

from zynqnn import zoo
from zynqnn.zoo import digits

MIN_FLOAT_ACC = 95.0  # the default recipe gives ~97.8 % on the held-out split
MAX_INT8_DROP = 1.5  # points


def test_load_data(digits_data):
    x_tr, y_tr, x_te, y_te = digits_data
    assert x_tr.shape == (1347, 1, 8, 8) and x_te.shape == (450, 1, 8, 8)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    assert float(x_tr.min()) == 0.0 and float(x_tr.max()) == 1.0
    counts = torch.bincount(y_te, minlength=10)
    assert int(counts.min()) >= 43 and int(counts.max()) <= 46  # stratified (classes 174..183)
    again = digits.load_data()
    assert all(torch.equal(a, b) for a, b in zip(digits_data, again, strict=True))
    other = digits.load_data(seed=1)
    assert not torch.equal(other[3], y_te)


def test_training_is_deterministic(digits_data):
    a = digits.train(epochs=1, data=digits_data)
    b = digits.train(epochs=1, data=digits_data)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not a.training


def test_pretrained_accuracy(digits_model, digits_data):
    x_tr, y_tr, x_te, y_te = digits_data
    assert digits.accuracy(digits_model, x_te, y_te) >= MIN_FLOAT_ACC
    assert digits.accuracy(digits_model, x_tr, y_tr) >= 99.0


def test_ptq_accuracy(digits_model, digits_data):
    x_tr, _, x_te, y_te = digits_data
    float_acc = digits.accuracy(digits_model, x_te, y_te)
    for engine in zoo.ENGINES:
        fx = zoo.quantize_fx(digits_model, x_tr[:1], engine, calibration=x_tr[:512])
        assert digits.accuracy(fx, x_te, y_te) >= float_acc - MAX_INT8_DROP, engine
        eager = digits.quantize_eager(digits_model, x_tr[:512], engine)
        assert digits.accuracy(eager, x_te, y_te) >= float_acc - MAX_INT8_DROP, engine


def test_eager_model_structure(digits_model, digits_data):
    x_tr, _, x_te, _ = digits_data
    q = digits.quantize_eager(digits_model, x_tr[:256], "fbgemm")
    kinds = {name: type(m).__name__ for name, m in q.named_children()}
    assert kinds == {
        "conv1": "ConvReLU2d",
        "relu1": "Identity",
        "conv2": "ConvReLU2d",
        "relu2": "Identity",
        "pool": "MaxPool2d",
        "conv3": "ConvReLU2d",
        "relu3": "Identity",
        "fc": "Linear",
        "quant": "Quantize",
        "dequant": "DeQuantize",
    }
    assert type(q.conv1).__module__.startswith("torch.ao.nn.intrinsic.quantized")
    with torch.no_grad():
        assert torch.isfinite(q(x_te[:4])).all()


def test_qat_accuracy(digits_model, digits_data):
    x_tr, y_tr, x_te, y_te = digits_data
    float_acc = digits.accuracy(digits_model, x_te, y_te)
    q = zoo.qat_finetune(digits_model, (x_tr, y_tr), "fbgemm", epochs=2, lr=1e-3)
    assert digits.accuracy(q, x_te, y_te) >= float_acc - MAX_INT8_DROP
    assert (
        zoo.op_summary(q).get("module:torch.ao.nn.intrinsic.quantized.modules.conv_relu.ConvReLU2d")
        == 3
    )


def test_get_pretrained(digits_model):
    m = zoo.get("digits_cnn", pretrained=True)
    assert all(torch.equal(v, digits_model.state_dict()[k]) for k, v in m.state_dict().items())


def test_cache_round_trip(digits_model, monkeypatch):
    path = digits.cache_path()
    assert path.is_file() and path.parent == digits.cache_dir()

    def no_training(*args, **kwargs):
        raise AssertionError("pretrained() retrained despite a valid cache file")

    monkeypatch.setattr(digits, "train", no_training)
    again = digits.pretrained()
    assert all(torch.equal(v, digits_model.state_dict()[k]) for k, v in again.state_dict().items())
    assert not again.training


def test_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ZYNQNN_CACHE", str(tmp_path))
    assert digits.cache_dir() == tmp_path
    monkeypatch.delenv("ZYNQNN_CACHE")
    assert digits.cache_dir().parts[-2:] == (".cache", "zynqnn")


def test_corrupt_or_stale_cache_is_retrained(monkeypatch, tmp_path):
    monkeypatch.setenv("ZYNQNN_CACHE", str(tmp_path))
    calls = []
    real_train = digits.train

    def counting_train(*args, **kwargs):
        calls.append(kwargs)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(digits, "train", counting_train)
    first = digits.pretrained(epochs=1)
    path = digits.cache_path(epochs=1)
    assert len(calls) == 1 and path.is_file()
    digits.pretrained(epochs=1)
    assert len(calls) == 1  # served from the cache

    good = path.read_bytes()
    stale = torch.load(path, weights_only=True)
    stale["meta"]["version"] = digits.CACHE_VERSION - 1
    bad_shape = torch.load(path, weights_only=True)
    bad_shape["state_dict"]["fc.weight"] = torch.zeros(3, 3)
    for corrupt in (b"not a torch file", good[: len(good) // 2], stale, bad_shape):
        if isinstance(corrupt, bytes):
            path.write_bytes(corrupt)
        else:
            torch.save(corrupt, path)
        model = digits.pretrained(epochs=1)
        assert all(torch.equal(v, first.state_dict()[k]) for k, v in model.state_dict().items())
        assert path.read_bytes() != b"not a torch file"
        assert digits._load_cached(path, 1, 0) is not None  # rewritten and valid again
    assert len(calls) == 5
