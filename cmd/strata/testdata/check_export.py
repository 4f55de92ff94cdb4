"""An independent check of `strata model export`, standard library only.

Reads safetensors files from the format's description (an 8-byte
little-endian header length, a JSON header, raw little-endian tensors)
and checks that the merged model of a version is the pre-trained model
plus (lora_alpha / r) * B @ A of its PEFT adapter, shapes as PEFT has
them. Usage: check_export.py V0_DIR PEFT_DIR MERGED_DIR. Prints a JSON
summary; exits non-zero on any mismatch.
"""
import array
import json
import os
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out = {}
    for name, t in header.items():
        assert t["dtype"] == "F32", (name, t["dtype"])
        b, e = t["data_offsets"]
        a = array.array("f")
        a.frombytes(data[b:e])
        if sys.byteorder != "little":
            a.byteswap()
        count = 1
        for d in t["shape"]:
            count *= d
        assert len(a) == count, (name, len(a), count)
        out[name] = (t["shape"], a)
    return out, meta


def main():
    v0, _ = read(os.path.join(sys.argv[1], "model.safetensors"))
    peft, _ = read(os.path.join(sys.argv[2], "adapter_model.safetensors"))
    merged, meta = read(os.path.join(sys.argv[3], "model.safetensors"))
    with open(os.path.join(sys.argv[2], "adapter_config.json")) as f:
        cfg = json.load(f)
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM", cfg
    r, scale = cfg["r"], cfg["lora_alpha"] / cfg["r"]
    assert set(v0) == set(merged), "the merged model's tensors differ from v0's"
    prefix = "base_model.model."
    adapted, max_delta, max_err = 0, 0.0, 0.0
    for name in sorted(peft):
        assert name.startswith(prefix), name
        if not name.endswith(".lora_B.weight"):
            continue
        module = name[len(prefix):-len(".lora_B.weight")]
        assert module.split(".")[-1] in cfg["target_modules"], module
        (out_, rb), bvals = peft[name]
        (ra, in_), avals = peft[prefix + module + ".lora_A.weight"]
        assert rb == r and ra == r, (module, rb, ra, r)
        wshape, w0 = v0[module + ".weight"]
        mshape, wm = merged[module + ".weight"]
        assert wshape == [out_, in_] and mshape == wshape, (module, wshape, mshape)
        for o in range(out_):
            for i in range(in_):
                s = sum(bvals[o * r + k] * avals[k * in_ + i] for k in range(r))
                want = w0[o * in_ + i] + scale * s
                max_delta = max(max_delta, abs(scale * s))
                max_err = max(max_err, abs(wm[o * in_ + i] - want))
        adapted += 1
    for name in v0:
        if name.endswith(".weight") and (prefix + name[:-len(".weight")] + ".lora_B.weight") not in peft:
            assert list(v0[name][1]) == list(merged[name][1]), name + " changed without an adapter"
    json.dump({"adapted": adapted, "max_delta": max_delta, "max_err": max_err, "metadata": meta,
               "tensors": len(merged)}, sys.stdout)
    if max_err > 1e-5:
        sys.exit("merged weights differ from W0 + scale * B @ A by %g" % max_err)


main()
