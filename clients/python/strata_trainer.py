"""Helper for writing a Strata trainer in Python (trainer protocol 2).

The Strata edge agent (`strata edge --trainer exec:CMD`) does everything
privacy-critical -- fetching models, clipping, noise, signing, transport,
budgets -- and asks a trainer process only to train. This module speaks the
protocol (docs/trainer-protocol.md) so that a trainer is one function:

    import strata_trainer as st

    def train(req):            # req.params: dict name -> float32 ndarray
        ...                    # train req.trainable (None: all) on req.data
        return req.params, loss

    def evaluate(params, backbone, x, y):   # a float (accuracy), or
        return st.Evaluation(loss, [("accuracy", acc, True)])

    st.serve(train, evaluate, name="my-trainer")

The same process can be the global tier's external evaluator
(topology `task.evaluator`): it is then asked to score theta on the job's
held-out set ("heldout", every round's gate) or on the whole of it
("final", the report), and the metrics `evaluate` names are what the
ledger records, the first of them the one the gate compares.

Only numpy and msgpack are needed. Personalisation is handled here for
every trainer: when the agent names personal tensors (the head), `train` is
called twice per round -- once from theta for the update that is sent, once
with only the personal tensors trainable, from theta plus the client's
private residual R -- and the new R is kept on disk, never sent.

Anything the trainer prints goes to stderr: stdout carries the protocol.
"""

import argparse
import os
import socket
import struct
import sys
import threading
import time

import msgpack
import numpy as np

VERSION = 1    # the framing version every frame carries
PROTOCOL = 2   # the revision of the messages, negotiated in hello/ready

HELLO, READY, TRAIN, CHUNK, RESULT, ERROR, EVALUATE, EVALUATION, SHUTDOWN = range(1, 10)
NAMES = {HELLO: "hello", READY: "ready", TRAIN: "train", CHUNK: "chunk", RESULT: "result",
         ERROR: "error", EVALUATE: "evaluate", EVALUATION: "evaluation", SHUTDOWN: "shutdown"}

MAX_CHUNK = 1 << 18          # float32 values per chunk
MAX_FRAME = 4 * MAX_CHUNK + 1024
PIXELS = 784


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow."""


# ---------------------------------------------------------------- framing

def encode_frame(typ, body):
    """Returns one frame: 4-byte big-endian length, type, version, msgpack body."""
    b = msgpack.packb(body, use_bin_type=True)
    if 2 + len(b) > MAX_FRAME:
        raise ProtocolError("%s frame of %d bytes > %d" % (NAMES.get(typ, typ), 2 + len(b), MAX_FRAME))
    return struct.pack(">IBB", 2 + len(b), typ, VERSION) + b


def _read_exact(r, n):
    buf = bytearray()
    while len(buf) < n:
        b = r.read(n - len(buf))
        if not b:
            return bytes(buf)
        buf += b
    return bytes(buf)


def read_frame(r):
    """Reads one frame; returns (type, body dict) or None at a clean end of stream."""
    hdr = _read_exact(r, 4)
    if not hdr:
        return None
    if len(hdr) < 4:
        raise ProtocolError("truncated frame length")
    (n,) = struct.unpack(">I", hdr)
    if n < 2 or n > MAX_FRAME:
        raise ProtocolError("frame length %d outside [2, %d]" % (n, MAX_FRAME))
    data = _read_exact(r, n)
    if len(data) < n:
        raise ProtocolError("truncated frame: %d of %d bytes" % (len(data), n))
    typ, ver = data[0], data[1]
    if ver != VERSION:
        raise ProtocolError("frame of protocol version %d; this helper speaks %d" % (ver, VERSION))
    return typ, msgpack.unpackb(data[2:], raw=False)


def expect(r, want):
    f = read_frame(r)
    if f is None:
        raise ProtocolError("stream ended, expected %s" % NAMES[want])
    if f[0] != want:
        raise ProtocolError("got %s, expected %s" % (NAMES.get(f[0], f[0]), NAMES[want]))
    return f[1]


def chunks(dim):
    return max(1, (dim + MAX_CHUNK - 1) // MAX_CHUNK)


def vector_frames(vec):
    """Yields the chunk frames of a float vector (sent as little-endian float32)."""
    v = np.ascontiguousarray(vec, dtype="<f4")
    for off in range(0, max(len(v), 1), MAX_CHUNK):
        yield encode_frame(CHUNK, {"offset": off, "data": v[off:off + MAX_CHUNK].tobytes()})


def recv_vector(r, dim, n_chunks):
    if dim < 0 or dim > 1 << 28 or n_chunks != chunks(dim):
        raise ProtocolError("vector of %d values in %d chunks: want %d chunks" % (dim, n_chunks, chunks(dim)))
    out = np.empty(dim, dtype=np.float32)
    nxt = 0
    for _ in range(n_chunks):
        c = expect(r, CHUNK)
        if c["offset"] != nxt:
            raise ProtocolError("chunk at offset %d, expected %d" % (c["offset"], nxt))
        part = np.frombuffer(c["data"], dtype="<f4")
        if nxt + len(part) > dim:
            raise ProtocolError("chunks overflow a vector of %d values" % dim)
        out[nxt:nxt + len(part)] = part
        nxt += len(part)
    if nxt != dim:
        raise ProtocolError("chunks held %d values, want %d" % (nxt, dim))
    return out


# ---------------------------------------------------------------- tensors

class Layout:
    """The named tensors of the flat parameter vector, in order (row-major)."""

    def __init__(self, tensors):
        self.names = [t["name"] for t in tensors]
        self.shapes = {t["name"]: tuple(t["shape"]) for t in tensors}
        self.offsets = {}
        off = 0
        for n in self.names:
            size = int(np.prod(self.shapes[n]))
            self.offsets[n] = (off, off + size)
            off += size
        self.dim = off

    def split(self, vec):
        """Returns a dict name -> float32 array (copies, safe to train in place)."""
        return {n: np.array(vec[a:b], dtype=np.float32).reshape(self.shapes[n])
                for n, (a, b) in self.offsets.items()}

    def join(self, params):
        out = np.empty(self.dim, dtype=np.float32)
        for n, (a, b) in self.offsets.items():
            p = np.asarray(params[n], dtype=np.float32)
            if p.size != b - a:
                raise ValueError("tensor %s has %d values, layout says %d" % (n, p.size, b - a))
            out[a:b] = p.reshape(-1)
        return out


# ---------------------------------------------------------------- data

class Backbone:
    """The frozen pre-trained layer: w1 (hidden x 784), b1 (hidden)."""

    def __init__(self, data_dir):
        with open(os.path.join(data_dir, "backbone.msgpack"), "rb") as f:
            d = msgpack.unpackb(f.read(), raw=False)
        self.hidden = d["hidden"]
        self.w1 = np.frombuffer(d["w1"], dtype="<f4").reshape(self.hidden, d["pixels"]).copy()
        self.b1 = np.frombuffer(d["b1"], dtype="<f4").copy()


class ClientData:
    """One client's training examples and its own evaluation examples
    (pixels scaled to [0, 1], float32; labels int64)."""

    def __init__(self, train_x, train_y, eval_x, eval_y):
        self.train_x, self.train_y, self.eval_x, self.eval_y = train_x, train_y, eval_x, eval_y

    def examples(self):
        return len(self.train_y)


class LMClientData:
    """One client's text (bytes) of the language-model task ("lm-lora")."""

    def __init__(self, text):
        self.text = text

    def examples(self):
        return len(self.text)


class LMDataDir:
    """Reads what `strata edge` exports for an "lm-lora" trainer: lm.msgpack
    (arch, LoRA settings, the frozen backbone and the adapters' fixed A as
    float32 arrays by name) and clients/ID.msgpack (each client's text)."""

    def __init__(self, path):
        self.path = path
        self._backbone = None
        self._lock = threading.Lock()

    def backbone(self):
        with self._lock:
            if self._backbone is None:
                with open(os.path.join(self.path, "lm.msgpack"), "rb") as f:
                    d = msgpack.unpackb(f.read(), raw=False)
                d["tensors"] = {n: np.frombuffer(t["data"], dtype="<f4").reshape(t["shape"]).copy()
                                for n, t in d["tensors"].items()}
                self._backbone = d
            return self._backbone

    def held_out(self, which):
        raise KeyError("the lm-lora export carries no held-out text")

    def client(self, client):
        if not client or "/" in client or client.startswith("."):
            raise KeyError("bad client id %r" % client)
        with open(os.path.join(self.path, "clients", client + ".msgpack"), "rb") as f:
            return LMClientData(msgpack.unpackb(f.read(), raw=False)["text"])


def open_data_dir(path):
    """The export's reader: the LM task's when lm.msgpack is there."""
    if os.path.exists(os.path.join(path, "lm.msgpack")):
        return LMDataDir(path)
    return DataDir(path)


class DataDir:
    """Reads what `strata edge` exports for its clients (backbone, test set, shards)."""

    def __init__(self, path):
        self.path = path
        self._test = None
        self._backbone = None
        self._lock = threading.Lock()

    def backbone(self):
        with self._lock:
            if self._backbone is None:
                self._backbone = Backbone(self.path)
            return self._backbone

    def _test_set(self):
        with self._lock:
            if self._test is None:
                with open(os.path.join(self.path, "test.msgpack"), "rb") as f:
                    d = msgpack.unpackb(f.read(), raw=False)
                self._test = (np.frombuffer(d["images"], dtype=np.uint8).reshape(-1, PIXELS),
                              np.frombuffer(d["labels"], dtype=np.uint8))
            return self._test

    def held_out(self, which):
        """The job's held-out examples (pixels in [0, 1], labels int64):
        "heldout", the per-round set the global tier's gate scores
        (heldout.msgpack's indices into the test set), or "final", the
        whole test set."""
        timg, tlab = self._test_set()
        if which == "final":
            return timg.astype(np.float32) / 255, tlab.astype(np.int64)
        if which != "heldout":
            raise KeyError("unknown evaluation set %r" % which)
        with open(os.path.join(self.path, "heldout.msgpack"), "rb") as f:
            d = msgpack.unpackb(f.read(), raw=False)
        idx = np.frombuffer(d["eval_index"], dtype="<u4").astype(np.int64)
        return timg[idx].astype(np.float32) / 255, tlab[idx].astype(np.int64)

    def client(self, client):
        if not client or "/" in client or client.startswith("."):
            raise KeyError("bad client id %r" % client)
        p = os.path.join(self.path, "clients", client + ".msgpack")
        with open(p, "rb") as f:
            d = msgpack.unpackb(f.read(), raw=False)
        tx = np.frombuffer(d["train"]["images"], dtype=np.uint8).reshape(-1, PIXELS)
        ty = np.frombuffer(d["train"]["labels"], dtype=np.uint8)
        idx = np.frombuffer(d["eval_index"], dtype="<u4").astype(np.int64)
        timg, tlab = self._test_set()
        return ClientData(tx.astype(np.float32) / 255, ty.astype(np.int64),
                          timg[idx].astype(np.float32) / 255, tlab[idx].astype(np.int64))


class PersonalStore:
    """Each client's personal residuals, kept on disk so they outlive a
    restarted trainer. They never go back to the agent."""

    def __init__(self, state_dir):
        self.dir = os.path.join(state_dir, "personal")
        os.makedirs(self.dir, exist_ok=True)

    def _path(self, client):
        return os.path.join(self.dir, client + ".msgpack")

    def get(self, client):
        try:
            with open(self._path(client), "rb") as f:
                d = msgpack.unpackb(f.read(), raw=False)
        except FileNotFoundError:
            return None
        return {n: np.frombuffer(v["data"], dtype="<f4").reshape(v["shape"]).copy() for n, v in d.items()}

    def put(self, client, tensors):
        d = {n: {"shape": list(np.shape(t)), "data": np.ascontiguousarray(t, dtype="<f4").tobytes()}
             for n, t in tensors.items()}
        tmp = self._path(client) + ".tmp"
        with open(tmp, "wb") as f:
            f.write(msgpack.packb(d, use_bin_type=True))
        os.replace(tmp, self._path(client))


# ---------------------------------------------------------------- scores

class Evaluation:
    """What `evaluate` may return instead of a bare accuracy: the loss and
    the named metrics, each (name, value, higher_is_better); the first is
    the one the global tier's gate compares. Names: letters, digits and
    _-./, at most 64 bytes, each once."""

    def __init__(self, loss=0.0, metrics=()):
        self.loss = float(loss)
        self.metrics = [(str(n), float(v), bool(h)) for n, v, h in metrics]


def scores(result):
    """Returns the evaluation keys of an `evaluate` result: a number is an
    accuracy (protocol 1's only score); an Evaluation gives its loss and
    metrics, and its "accuracy" metric, if any, is also sent as `accuracy`
    for agents of protocol 1."""
    if not isinstance(result, Evaluation):
        acc = float(result)
        return {"accuracy": acc, "loss": 0.0, "metrics": [{"name": "accuracy", "value": acc, "higher_is_better": True}]}
    acc = next((v for n, v, _ in result.metrics if n == "accuracy"), 0.0)
    return {"accuracy": acc, "loss": result.loss,
            "metrics": [{"name": n, "value": v, "higher_is_better": h} for n, v, h in result.metrics]}


def balanced_accuracy(pred, y):
    """The mean over the classes present in y of the fraction of each
    predicted right."""
    pred, y = np.asarray(pred), np.asarray(y)
    classes = np.unique(y)
    return float(np.mean([(pred[y == c] == c).mean() for c in classes])) if len(classes) else 0.0


# ---------------------------------------------------------------- serving

class Request:
    """One training request. params: dict of float32 arrays to start from;
    trainable: None (train every tensor) or the set of tensor names to train
    (the rest stay fixed); data: ClientData; backbone: Backbone; epochs,
    batch, lr, seed: the job's local recipe."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class _Session:
    def __init__(self, r, w, train, evaluate, name, delay):
        self.r, self.w = r, w
        self.train_fn, self.evaluate_fn = train, evaluate
        self.name, self.delay = name, delay

    def send(self, typ, body, vec=None):
        self.w.write(encode_frame(typ, body))
        if vec is not None:
            for fr in vector_frames(vec):
                self.w.write(fr)
        self.w.flush()

    def run(self):
        hello = expect(self.r, HELLO)
        self.layout = Layout(hello["layout"])
        if self.layout.dim != hello["dim"]:
            raise ProtocolError("layout has %d values, hello says %d" % (self.layout.dim, hello["dim"]))
        self.personal = list(hello.get("personal") or [])
        self.data = open_data_dir(hello["data_dir"])
        self.task = hello.get("task") or ""
        self.store = PersonalStore(hello.get("state_dir") or os.path.join(hello["data_dir"], "state"))
        self.send(READY, {"trainer": self.name, "personal": True, "protocol": PROTOCOL})
        while True:
            f = read_frame(self.r)
            if f is None or f[0] == SHUTDOWN:
                return
            typ, body = f
            if typ == TRAIN:
                self.on_train(body)
            elif typ == EVALUATE:
                self.on_evaluate(body)
            else:
                raise ProtocolError("unexpected %s" % NAMES.get(typ, typ))

    def _personal_params(self, client, vec):
        """The client's personal model: theta with residual R added to the
        personal tensors (None if the client has no residual yet)."""
        mine = self.store.get(client) if self.personal else None
        if not mine:
            return None
        params = self.layout.split(vec)
        for n in self.personal:
            if n in mine:
                params[n] = params[n] + mine[n]
        return params

    def on_train(self, t):
        theta = recv_vector(self.r, t["dim"], t["chunks"])
        client, rnd = t["client"], t["round"]
        try:
            data = self.data.client(client)
        except (OSError, KeyError) as e:
            self.send(ERROR, {"client": client, "round": rnd, "code": "no_data", "message": str(e)})
            return
        common = dict(client=client, round=rnd, data=data, backbone=self.data.backbone(), epochs=t["epochs"],
                      batch=t["batch"], lr=t["lr"], seed=t["seed"], layout=self.layout)
        try:
            # The shared update: trained from theta alone, so the client's
            # residual never influences what is sent.
            params, loss = self.train_fn(Request(params=self.layout.split(theta), trainable=None, **common))
            delta = self.layout.join(params) - theta
            if self.personal:
                # The personal residual: only the personal tensors train,
                # from theta + R; the new R stays here.
                start = self._personal_params(client, theta) or self.layout.split(theta)
                glob = self.layout.split(theta)
                common["epochs"] = t.get("personal_epochs") or t["epochs"]
                p2, _ = self.train_fn(Request(params=start, trainable=set(self.personal), **common))
                self.store.put(client, {n: np.asarray(p2[n], dtype=np.float32) - glob[n] for n in self.personal})
        except Exception as e:  # the agent logs it; this client's round is dropped
            self.send(ERROR, {"client": client, "round": rnd, "code": "train_failed", "message": repr(e)})
            return
        if self.delay:
            time.sleep(self.delay)
        self.send(RESULT, {"client": client, "round": rnd, "kind": "delta", "examples": int(data.examples()),
                           "dim": self.layout.dim, "chunks": chunks(self.layout.dim), "loss": float(loss)}, delta)

    def on_evaluate(self, e):
        theta = recv_vector(self.r, e["dim"], e["chunks"])
        client, which = e.get("client") or "", e.get("set") or ""
        if self.evaluate_fn is None:
            self.send(ERROR, {"client": client, "round": 0, "code": "unsupported", "message": "this trainer does not evaluate"})
            return
        try:
            if which:
                x, y = self.data.held_out(which)
            else:
                data = self.data.client(client)
                x, y = data.eval_x, data.eval_y
        except (OSError, KeyError) as err:
            self.send(ERROR, {"client": client, "round": 0, "code": "no_data", "message": str(err)})
            return
        bb = self.data.backbone()
        try:
            glob = scores(self.evaluate_fn(self.layout.split(theta), bb, x, y))
            mine = None if which else self._personal_params(client, theta)
            pers = scores(self.evaluate_fn(mine, bb, x, y))["accuracy"] if mine else 0.0
        except Exception as err:  # the agent reports it; the session goes on
            self.send(ERROR, {"client": client, "round": 0, "code": "evaluate_failed", "message": repr(err)})
            return
        body = {"client": client, "examples": int(len(y)), "personal": mine is not None, "personal_accuracy": float(pers)}
        body.update(glob)
        self.send(EVALUATION, body)


def serve(train, evaluate=None, name="python-trainer", argv=None):
    """Serves the protocol: on stdin/stdout (the agent started this process
    with --trainer exec:...), or with --socket PATH on a unix socket the
    agent connects to (--trainer unix:PATH), one thread per connection."""
    ap = argparse.ArgumentParser(description="Strata trainer (protocol %d)" % PROTOCOL)
    ap.add_argument("--socket", help="listen on this unix socket instead of stdin/stdout")
    ap.add_argument("--delay", type=float, default=0, help="sleep this many seconds before each result (tests kills and timeouts)")
    args = ap.parse_args(argv)
    if not args.socket:
        r, w = sys.stdin.buffer, sys.stdout.buffer
        sys.stdout = sys.stderr  # prints must not corrupt the protocol stream
        _Session(r, w, train, evaluate, name, args.delay).run()
        return
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(args.socket)
    srv.listen()
    print("%s listening on %s" % (name, args.socket), file=sys.stderr, flush=True)

    def handle(conn):
        with conn:
            f = conn.makefile("rwb")
            try:
                _Session(f, f, train, evaluate, name, args.delay).run()
            except (ProtocolError, OSError) as e:
                print("%s: connection ended: %s" % (name, e), file=sys.stderr, flush=True)

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()
