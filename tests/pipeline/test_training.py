import json

from sedlib.config import load_config
from sedlib.pipeline import training


def test_training_code_hash_covers_the_training_modules(tmp_path, monkeypatch):
    before = training.training_code_hash()
    package = tmp_path / "sedlib"
    package.mkdir()
    for name in training.TRAINING_CODE:
        (package / name).write_text(f"# {name}\n")
    monkeypatch.setattr(training, "__file__", str(package / "pipeline" / "training.py"))
    changed = training.training_code_hash()
    (package / "optim.py").write_text("# optim.py, edited\n")
    assert len({before, changed, training.training_code_hash()}) == 3


def test_training_record_names_settings_features_and_code():
    config = load_config("params/smoke.yaml")
    spec = config.models["sed_a2d"]
    heads = training.head_config(config, spec, feature_dim=16, num_classes=10)
    record = training._training_record(config, spec, heads, "train-hash", "val-hash")
    assert record["features"] == {"train": "train-hash", "val": "val-hash"}
    assert record["code"] == training.training_code_hash()
    assert record["train"]["kappa"] == spec.train.kappa and record["heads"]["hidden_dim"] == 32
    assert json.loads(json.dumps(record)) == record
