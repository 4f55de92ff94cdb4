#!/usr/bin/env python3
"""A Strata trainer in plain numpy: fine-tunes the MNIST task's per-pixel
input adapter and head over the frozen backbone, as the built-in Go trainer
does (finetune/model.go), with minibatch SGD.

    strata edge --region eu --trainer "exec:python3 clients/python/numpy_trainer.py"
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import strata_trainer as st  # noqa: E402


def _weights(params, bb):
    w1 = params.get("backbone.weight", bb.w1)
    b1 = params.get("backbone.bias", bb.b1)
    return w1, b1


def forward(params, bb, x):
    xa = x * params["adapter.scale"] + params["adapter.shift"]
    w1, b1 = _weights(params, bb)
    z1 = xa @ w1.T + b1
    a1 = np.maximum(z1, 0)
    z2 = a1 @ params["head.weight"].T + params["head.bias"]
    return xa, z1, a1, z2


def train(req):
    known = {"adapter.scale", "adapter.shift", "head.weight", "head.bias", "backbone.weight", "backbone.bias"}
    unknown = set(req.params) - known
    if unknown:
        raise ValueError("this trainer knows the MNIST adapter task only; unknown tensors %s" % sorted(unknown))
    p, bb = req.params, req.backbone
    x, y = req.data.train_x, req.data.train_y
    rng = np.random.default_rng(req.seed)
    full = "backbone.weight" in p
    last = 0.0
    for _ in range(req.epochs):
        order = rng.permutation(len(y))
        total, batches = 0.0, 0
        for lo in range(0, len(order), req.batch):
            idx = order[lo:lo + req.batch]
            xb, yb, n = x[idx], y[idx], len(idx)
            xa, z1, a1, z2 = forward(p, bb, xb)
            z2 = z2 - z2.max(axis=1, keepdims=True)
            e = np.exp(z2)
            prob = e / e.sum(axis=1, keepdims=True)
            total += float(-np.log(prob[np.arange(n), yb] + 1e-30).mean())
            batches += 1
            dz2 = prob
            dz2[np.arange(n), yb] -= 1
            dz2 /= n
            w1, _ = _weights(p, bb)
            dz1 = (dz2 @ p["head.weight"]) * (z1 > 0)
            dxa = dz1 @ w1
            grads = {"head.weight": dz2.T @ a1, "head.bias": dz2.sum(axis=0),
                     "adapter.scale": (dxa * xb).sum(axis=0), "adapter.shift": dxa.sum(axis=0)}
            if full:
                grads["backbone.weight"] = dz1.T @ xa
                grads["backbone.bias"] = dz1.sum(axis=0)
            for k, g in grads.items():
                if req.trainable is None or k in req.trainable:
                    p[k] -= req.lr * g.astype(np.float32)
        last = total / max(batches, 1)
    return p, last


def evaluate(params, bb, x, y):
    """Accuracy (the gate's metric) and balanced accuracy (the mean of the
    per-class recalls, fairer under the clients' label skew), with the
    cross-entropy loss."""
    z2 = forward(params, bb, x)[3]
    z2 = z2 - z2.max(axis=1, keepdims=True)
    logp = z2 - np.log(np.exp(z2).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(len(y)), y].mean())
    pred = z2.argmax(axis=1)
    return st.Evaluation(loss, [("accuracy", float((pred == y).mean()), True),
                                ("balanced_accuracy", st.balanced_accuracy(pred, y), True)])


if __name__ == "__main__":
    st.serve(train, evaluate, name="numpy-example")
