"""The CNN baseline encoder, trained from scratch on (weak) patch labels with early stopping on validation AUC."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..models.cnn import CNNEncoder
from .config import PipelineConfig
from .context import RunContext
from .seed import seed_everything


def train_cnn(train_x, train_y, val_x, val_y, config: PipelineConfig, context: RunContext
              ) -> tuple[CNNEncoder, dict]:
    """A CNN encoder on (weak) patch labels, early-stopped on the validation AUC (``config.cnn_patience``).

    Returns:
        (the encoder at its best epoch, in eval mode; history with ``val_auc`` per epoch and ``best_epoch``).
    """
    from sklearn.metrics import roc_auc_score

    progress, device = context.progress, context.device

    seed_everything(config.seed)
    model = CNNEncoder(config.cnn).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.cnn_lr, weight_decay=1e-4)
    pos = float((train_y == 1).sum())
    pos_weight = torch.tensor((len(train_y) - pos) / max(pos, 1.0))
    rng = np.random.default_rng(config.seed)
    best, best_state, bad, history = -np.inf, copy.deepcopy(model.state_dict()), 0, {"val_auc": []}
    tx, ty = torch.as_tensor(train_x), torch.as_tensor(train_y).float()
    for epoch in tqdm(range(config.cnn_epochs), desc="CNN", disable=not progress, leave=False):
        model.train()
        order = rng.permutation(len(tx))
        for start in range(0, len(order), 128):
            idx = order[start : start + 128]
            if len(idx) < 2:
                continue
            x = tx[idx].to(device)
            if rng.random() < 0.5:
                x = torch.flip(x, dims=[3])
            if rng.random() < 0.5:
                x = torch.flip(x, dims=[2])
            loss = F.binary_cross_entropy_with_logits(model(x), ty[idx].to(device), pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            p = torch.cat([model(torch.as_tensor(val_x[i : i + 512]).to(device)).cpu()
                           for i in range(0, len(val_x), 512)]).numpy()
        auc = roc_auc_score(val_y, p) if len(np.unique(val_y)) == 2 else -float(loss)
        history["val_auc"].append(float(auc))
        if auc > best:
            best, best_state, bad = auc, copy.deepcopy(model.state_dict()), 0
            history["best_epoch"] = epoch
        else:
            bad += 1
            if bad >= config.cnn_patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return model, history
