"""Issue 11, stale results: a VAE checkpoint or a benchmark fold is resumed only when the fingerprint of its
data, configuration and code matches; otherwise it is recomputed and the log says so. A truncated or foreign
last.pt is not a traceback."""

from __future__ import annotations

import json

import numpy as np
import torch

from LNMStagingLib.models.vae import VAEConfig
from LNMStagingLib.training.vae_train import VAETrainConfig, train_vae

VAE_CONFIG = VAEConfig(base=2, latent_size=2, patch_size=16)
TRAIN = VAETrainConfig(epochs=2, min_epochs=1, patience=1, batch_size=16, seed=0)


def _images(seed: int) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).random((24, 1, 16, 16), dtype=np.float32))


def _train(images, checkpoint, messages):
    model, history = train_vae(images, images[:8], VAE_CONFIG, TRAIN, checkpoint, progress=False,
                               log=messages.append)
    return model, history


def test_a_checkpoint_of_another_cohort_is_not_resumed(tmp_path):
    checkpoint, messages = tmp_path / "vae_checkpoint", []
    first, _ = _train(_images(1), checkpoint, messages)
    assert (checkpoint / "last.pt").is_file() and messages == []
    resumed, history = _train(_images(1), checkpoint, messages)  # same data, config, code: resumed, nothing to do
    assert messages == [] and history["epochs_run"] == 2
    other, _ = _train(_images(2), checkpoint, messages)
    assert len(messages) == 1 and "left by another run" in messages[0]
    fresh, _ = _train(_images(2), tmp_path / "elsewhere", [])
    for a, b in zip(other.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # exactly what a fresh run on the new cohort gives
    assert not torch.equal(next(iter(first.state_dict().values())), next(iter(other.state_dict().values())))


def test_a_truncated_or_foreign_checkpoint_starts_fresh_with_one_line(tmp_path):
    checkpoint, messages = tmp_path / "vae_checkpoint", []
    _train(_images(1), checkpoint, messages)
    last = checkpoint / "last.pt"
    last.write_bytes(last.read_bytes()[:200])
    _train(_images(1), checkpoint, messages)
    torch.save({"weights": torch.zeros(3)}, last)  # a foreign file of the same name
    _train(_images(1), checkpoint, messages)
    assert len(messages) == 2 and all("unreadable checkpoint" in m and "\n" not in m for m in messages)
    assert not list(checkpoint.glob(".*partial*"))


def test_a_benchmark_rerun_on_other_data_recomputes_and_states_the_data(tmp_path):
    from LNMStagingLib.evaluation.benchmark import run_benchmark
    from LNMStagingLib.synthetic.nodules import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", n_patients=30, seed=5)
    out, messages = tmp_path / "bench", []
    kwargs = dict(methods=("size",), n_folds=2, quick=True, progress=False, command="test", log=messages.append,
                  n_boot=20)
    run_benchmark(data, out, max_patients=16, **kwargs)
    small = json.loads((out / "size" / "fold_0" / "result.json").read_text())
    assert "16 patients" in (out / "benchmark.md").read_text() and "random subset of the 30" in \
        (out / "benchmark.md").read_text()
    messages.clear()
    path = run_benchmark(data, out, max_patients=24, **kwargs)
    assert sum("left by another run" in m for m in messages) == 2
    large = json.loads((out / "size" / "fold_0" / "result.json").read_text())
    assert len(large["train_patients"]) + len(large["test_patients"]) == 24 != \
        len(small["train_patients"]) + len(small["test_patients"])
    assert "24 patients" in path.read_text()
    messages.clear()
    run_benchmark(data, out, max_patients=24, **kwargs)
    assert not any("left by another run" in m for m in messages)  # the same run resumes
