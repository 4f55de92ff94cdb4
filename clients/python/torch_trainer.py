#!/usr/bin/env python3
"""An example Strata trainer in PyTorch, for two tasks.

- "mnist-adapter": fine-tunes the MNIST task's per-pixel input adapter (a
  parameter-efficient adapter, in the spirit of LoRA: a few trainable
  parameters in front of a frozen pre-trained layer) and the head, with
  torch.optim.SGD and autograd.
- "lm-lora": the language-model task's transformer (task/lm) rebuilt in
  torch from the exported backbone -- byte embeddings and learned
  positions, pre-norm blocks of RMSNorm, causal multi-head attention and a
  GELU (tanh) MLP, final norm, untied head -- with FFA-LoRA adapters:
  W + (alpha/rank)*B*A, A fixed, only B trained (theta is the B matrices).
  Local training is the built-in trainer's recipe: `epochs` SGD steps of
  `batch` random windows of context+1 bytes of the client's text.

The edge agent beside it clips, noises and publishes whatever it returns.

    strata edge --region eu --trainer "exec:python3 clients/python/torch_trainer.py"

`--lm-check DIR` (used by the Go tests) reads DIR/check.msgpack (theta,
windows, lr), runs the LM on the export in DIR and prints the summed loss
and one SGD step's new B as JSON.
"""

import math
import os
import sys

import numpy as np
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


# ---------------------------------------------------------------- lm-lora

def _lm_forward(bb, B, tokens):
    """Logits [n, t, 256] of the LM on tokens [n, t] (int64), with the
    adapters' B (name -> tensor) folded into their projections."""
    a, T = bb["arch"], bb["torch"]
    d, H = a["d_model"], a["heads"]
    n, t = tokens.shape
    scale = bb["lora_alpha"] / bb["lora_rank"]
    eps = bb["norm_eps"]

    def norm(x, g):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * g

    def proj(x, module):
        w = T[module + ".weight"]
        if module + ".lora_B.weight" in B:
            w = w + scale * B[module + ".lora_B.weight"] @ T[module + ".lora_A.weight"]
        return x @ w.t()

    x = T["embed_tokens.weight"][tokens] + T["embed_positions.weight"][:t]
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    for l in range(a["layers"]):
        m = "layers.%d." % l
        h = norm(x, T[m + "input_layernorm.weight"])
        q, k, v = (proj(h, m + "self_attn.%s_proj" % p).view(n, t, H, d // H).transpose(1, 2) for p in "qkv")
        s = (q @ k.transpose(-1, -2)) / math.sqrt(d // H)
        s = s.masked_fill(~mask, float("-inf")).softmax(-1)
        x = x + proj((s @ v).transpose(1, 2).reshape(n, t, d), m + "self_attn.o_proj")
        h = norm(x, T[m + "post_attention_layernorm.weight"])
        u = proj(h, m + "mlp.up_proj")
        x = x + proj(torch.nn.functional.gelu(u, approximate="tanh"), m + "mlp.down_proj")
    return norm(x, T["norm.weight"]) @ T["lm_head.weight"].t()


def _lm_backbone(bb):
    if "torch" not in bb:
        bb["torch"] = {k: torch.from_numpy(v) for k, v in bb["tensors"].items()}
    return bb


def _lm_loss(bb, B, windows):
    """Summed cross-entropy (nats) of predicting windows[:, 1:] from windows[:, :-1]."""
    logits = _lm_forward(bb, B, windows[:, :-1])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, 256), windows[:, 1:].reshape(-1), reduction="sum")


def _lm_step(bb, B, windows, lr):
    """One SGD step on B over windows (mean loss per predicted byte)."""
    for b in B.values():
        b.requires_grad_(True)
        b.grad = None
    loss = _lm_loss(bb, B, windows)
    (loss / (windows.shape[0] * (windows.shape[1] - 1))).backward()
    with torch.no_grad():
        for b in B.values():
            b -= lr * b.grad
    return float(loss)


def train_lm(req):
    bb = _lm_backbone(req.backbone)
    win = bb["arch"]["context"] + 1
    text = req.data.text
    if len(text) < win:
        raise ValueError("client text of %d bytes is shorter than a window of %d" % (len(text), win))
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8).to(torch.int64)
    B = {n: torch.from_numpy(v.copy()) for n, v in req.params.items()}
    g = torch.Generator().manual_seed(req.seed & 0x7FFFFFFFFFFFFFFF)
    last = 0.0
    for _ in range(req.epochs):
        offs = torch.randint(0, len(text) - win + 1, (req.batch,), generator=g)
        windows = torch.stack([data[o:o + win] for o in offs.tolist()])
        last = _lm_step(bb, B, windows, req.lr) / (req.batch * (win - 1))
    return {n: b.detach().numpy().copy() for n, b in B.items()}, last


def train_any(req):
    if isinstance(req.backbone, dict) and "arch" in req.backbone:
        return train_lm(req)
    return train(req)


def lm_check(path):
    """The Go tests' parity check: loss and one SGD step on given windows."""
    import json

    import msgpack
    data = st.LMDataDir(path)
    bb = _lm_backbone(data.backbone())
    with open(os.path.join(path, "check.msgpack"), "rb") as f:
        c = msgpack.unpackb(f.read(), raw=False)
    layout = st.Layout(c["layout"])
    theta = np.frombuffer(c["theta"], dtype="<f4")
    B = {n: torch.from_numpy(v) for n, v in layout.split(theta).items()}
    windows = torch.tensor([list(w) for w in c["windows"]], dtype=torch.int64)
    with torch.no_grad():
        loss = float(_lm_loss(bb, B, windows))
    _lm_step(bb, B, windows, c["lr"])
    after = layout.join({n: b.detach().numpy() for n, b in B.items()})
    print(json.dumps({"loss": loss, "theta": [float(v) for v in after]}))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--lm-check":
        lm_check(sys.argv[2])
    else:
        st.serve(train_any, evaluate, name="pytorch-example %s" % torch.__version__)
