#!/usr/bin/env python3
"""An example Strata trainer in PyTorch: fine-tunes the MNIST task's
per-pixel input adapter (a parameter-efficient adapter, in the spirit of
LoRA: a few trainable parameters in front of a frozen pre-trained layer)
and the head, with torch.optim.SGD and autograd. The edge agent beside it
clips, noises and publishes whatever it returns.

    strata edge --region eu --trainer "exec:python3 clients/python/torch_trainer.py"
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import strata_trainer as st  # noqa: E402

torch.set_num_threads(1)


class AdapterNet(torch.nn.Module):
    """x' = scale*x + shift; h = relu(W1 x' + b1) (frozen); y = W2 h + b2."""

    def __init__(self, params, bb):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.from_numpy(params["adapter.scale"]))
        self.shift = torch.nn.Parameter(torch.from_numpy(params["adapter.shift"]))
        self.backbone = torch.nn.Linear(bb.w1.shape[1], bb.w1.shape[0])
        with torch.no_grad():
            self.backbone.weight.copy_(torch.from_numpy(params.get("backbone.weight", bb.w1)))
            self.backbone.bias.copy_(torch.from_numpy(params.get("backbone.bias", bb.b1)))
        full = "backbone.weight" in params
        self.backbone.requires_grad_(full)
        self.head = torch.nn.Linear(bb.w1.shape[0], params["head.bias"].shape[0])
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(params["head.weight"]))
            self.head.bias.copy_(torch.from_numpy(params["head.bias"]))

    def forward(self, x):
        return self.head(torch.relu(self.backbone(x * self.scale + self.shift)))

    def named_tensors(self):
        return {"adapter.scale": self.scale, "adapter.shift": self.shift,
                "head.weight": self.head.weight, "head.bias": self.head.bias,
                "backbone.weight": self.backbone.weight, "backbone.bias": self.backbone.bias}

    def params(self):
        return {k: v.detach().numpy().copy() for k, v in self.named_tensors().items()}


def train(req):
    torch.manual_seed(req.seed & 0x7FFFFFFFFFFFFFFF)
    net = AdapterNet(req.params, req.backbone)
    if req.trainable is not None:
        for name, p in net.named_tensors().items():
            p.requires_grad_(name in req.trainable)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=req.lr)
    x = torch.from_numpy(req.data.train_x)
    y = torch.from_numpy(req.data.train_y)
    last = 0.0
    for _ in range(req.epochs):
        order = torch.randperm(len(y))
        total, batches = 0.0, 0
        for lo in range(0, len(order), req.batch):
            idx = order[lo:lo + req.batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item()
            batches += 1
        last = total / max(batches, 1)
    out = net.params()
    return {k: out[k] for k in req.params}, last


def evaluate(params, bb, x, y):
    """Accuracy (the gate's metric) and balanced accuracy (the mean of the
    per-class recalls, fairer under the clients' label skew), with the
    cross-entropy loss."""
    with torch.no_grad():
        net = AdapterNet(params, bb)
        logits = net(torch.from_numpy(x))
        ty = torch.from_numpy(y)
        loss = float(torch.nn.functional.cross_entropy(logits, ty))
        pred = logits.argmax(dim=1)
        return st.Evaluation(loss, [("accuracy", float((pred == ty).float().mean()), True),
                                    ("balanced_accuracy", st.balanced_accuracy(pred.numpy(), y), True)])


if __name__ == "__main__":
    st.serve(train, evaluate, name="pytorch-example %s" % torch.__version__)
