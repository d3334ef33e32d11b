#!/usr/bin/env python3
"""Reference fixtures for brainfit's ONNX feature extraction (crates/brainfit-extract, tract):
a miniature AlexNet built with the `onnx` package (seeded random weights) and its activations
on the 92 Kriegeskorte images computed by `onnxruntime`, so the Rust tests can run the same
network with tract and compare.

Usage (from the repository root):
    .venv/bin/python scripts/python/make_fixtures_onnx.py
    (or: .venv/bin/python scripts/python/make_fixtures.py onnx)
    .venv/bin/python scripts/python/make_fixtures_onnx.py wide OUT.onnx
        only writes the memory-benchmark network (input [N,3,224,224], one wide conv layer of
        16x224x224 = 802,816 units per image); nothing else, not committed.

Deterministic: weights from numpy default_rng(fixed seed); onnxruntime on the CPU, one thread,
graph optimisations off; the model serialised with deterministic protobuf output and fixed
producer fields. Rerunning rewrites the same bytes.

Images: tests/data/kriegeskorte2008/images.npy (KRIEG_DIR=... overrides the folder) if
present, else ../shared/data/kriegeskorte2008/images.npy relative to the repository root;
[92, 175, 175, 3] uint8 RGB.

Files under tests/fixtures/onnx/ (documented in its README.md, written here):
  tiny_alexnet.onnx   the network (opset 17, ir_version 8)
  layers.csv          node,op_type,output,shape: every node, its output tensor, the output
                      shape per image ("8x15x15"), as onnxruntime produced it
  input_first.npy     [3, 64, 64] float32: image 0 preprocessed
  <tensor>.npy        [n_images, units] float32 activations, flattened per image in C order
                      (C, H, W), for conv1_out (first CONV1_IMAGES images only, to keep the
                      fixtures small), relu2_out, add3_out, fc6_out, relu7_out, prob_out
"""
from __future__ import annotations

import copy
import csv
import importlib.metadata
import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "onnx"
KRIEG = Path(os.environ.get("KRIEG_DIR", ROOT / "tests" / "data" / "kriegeskorte2008"))
SHARED_IMAGES = ROOT.parent / "shared" / "data" / "kriegeskorte2008" / "images.npy"

OPSET = 17
IR_VERSION = 8
PRODUCER = "brainfit scripts/python/make_fixtures_onnx.py"
PRODUCER_VERSION = "1"

SIZE = 64
CROP_FRACTION = 0.875
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

SEED_ALEXNET = 2012
SEED_WIDE = 224

# tensors saved as activations, in this order; conv1_out (the largest, 1800 units) for the
# first CONV1_IMAGES images only, so that tests/fixtures/ stays under make_fixtures.py's cap
SAVED = ["conv1_out", "relu2_out", "add3_out", "fc6_out", "relu7_out", "prob_out"]
CONV1_IMAGES = 24
MAX_BYTES = 1536 * 1024


def log(msg: str):
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# Model building
# ---------------------------------------------------------------------------

class Builder:
    """Collects nodes and initializers; node `name` writes tensor `name + '_out'`."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.inits = []

    def he(self, shape, fan_in):
        w = self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        return w.astype(np.float32)

    def bias(self, n):
        return self.rng.uniform(-0.05, 0.05, size=n).astype(np.float32)

    def init(self, name, arr):
        from onnx import numpy_helper
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name=name))
        return name

    def node(self, op, name, inputs, **attrs):
        from onnx import helper
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(self, name, x, c_in, c_out, k, stride=1, pad=0):
        w = self.init(f"{name}_W", self.he((c_out, c_in, k, k), c_in * k * k))
        b = self.init(f"{name}_B", self.bias(c_out))
        return self.node("Conv", name, [x, w, b], kernel_shape=[k, k], strides=[stride, stride],
                         pads=[pad, pad, pad, pad])

    def gemm(self, name, x, n_in, n_out):
        # weight stored [out, in] as in PyTorch's Linear, hence transB=1
        w = self.init(f"{name}_W", self.he((n_out, n_in), n_in))
        b = self.init(f"{name}_B", self.bias(n_out))
        return self.node("Gemm", name, [x, w, b], alpha=1.0, beta=1.0, transB=1)

    def model(self, graph_name, input_shape, output, output_shape):
        import onnx
        from onnx import TensorProto, helper
        graph = helper.make_graph(
            self.nodes, graph_name,
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, input_shape)],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
            initializer=self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION)
        m.producer_name = PRODUCER
        m.producer_version = PRODUCER_VERSION
        onnx.checker.check_model(m, full_check=True)
        return m


def build_tiny_alexnet():
    """AlexNet in miniature: 64x64 input, conv1 8@11x11/4 p2, LRN, pools, two 3x3 convs with a
    residual Add, three Gemm layers and Softmax. Shapes per image in layers.csv."""
    b = Builder(SEED_ALEXNET)
    x = b.conv("conv1", "image", 3, 8, 11, stride=4, pad=2)              # 8x15x15
    x = b.node("Relu", "relu1", [x])
    x = b.node("LRN", "lrn1", [x], size=5, alpha=1e-4, beta=0.75, bias=2.0)
    x = b.node("MaxPool", "pool1", [x], kernel_shape=[3, 3], strides=[2, 2])   # 8x7x7
    x = b.conv("conv2", x, 8, 16, 3, pad=1)                               # 16x7x7
    x = b.node("Relu", "relu2", [x])
    p2 = b.node("MaxPool", "pool2", [x], kernel_shape=[3, 3], strides=[2, 2])  # 16x3x3
    x = b.conv("conv3", p2, 16, 16, 3, pad=1)                             # 16x3x3
    x = b.node("Relu", "relu3", [x])
    x = b.node("Add", "add3", [x, p2])
    x = b.node("Flatten", "flatten", [x], axis=1)                         # 144
    x = b.gemm("fc6", x, 144, 64)
    x = b.node("Relu", "relu6", [x])
    x = b.gemm("fc7", x, 64, 32)
    x = b.node("Relu", "relu7", [x])
    x = b.gemm("fc8", x, 32, 10)
    x = b.node("Softmax", "prob", [x], axis=1)
    return b.model("tiny_alexnet", ["N", 3, SIZE, SIZE], x, ["N", 10])


def build_wide(size: int = 224):
    """Memory-benchmark network: conv_wide (3->16, 3x3 pad 1: 16 x size x size units per image,
    802,816 at the default 224) -> relu_wide -> pool (MaxPool 2 s2) -> flatten -> fc (Gemm to
    10). Input [N, 3, size, size], size even; scripts/bench/side_by_side.py builds smaller ones."""
    assert size % 2 == 0, size
    b = Builder(SEED_WIDE)
    x = b.conv("conv_wide", "image", 3, 16, 3, pad=1)
    x = b.node("Relu", "relu_wide", [x])
    x = b.node("MaxPool", "pool", [x], kernel_shape=[2, 2], strides=[2, 2])   # 16 x size/2 x size/2
    x = b.node("Flatten", "flatten", [x], axis=1)
    x = b.gemm("fc", x, 16 * (size // 2) ** 2, 10)
    return b.model("wide", ["N", 3, size, size], x, ["N", 10])


def serialize(model) -> bytes:
    return model.SerializeToString(deterministic=True)


def write_wide(path, size: int = 224):
    data = serialize(build_wide(size))
    Path(path).write_bytes(data)
    log(f"wide: wrote {path} ({len(data) / 1024 / 1024:.1f} MiB)")


# ---------------------------------------------------------------------------
# Preprocessing (Pillow + NumPy, as torchvision's PIL path does it)
# ---------------------------------------------------------------------------

def preprocess(rgb: np.ndarray, size: int = SIZE) -> np.ndarray:
    """[H, W, 3] uint8 -> [3, size, size] float32: centred square crop of side
    floor(0.875 * min(h, w) + 0.5), Pillow bilinear resize, / float32(255) (torchvision's ToTensor),
    (x - mean) / std, HWC -> CHW."""
    from PIL import Image

    img = Image.fromarray(rgb)
    w, h = img.size
    side = int(np.floor(CROP_FRACTION * min(h, w) + 0.5))
    top = int(round((h - side) / 2.0))
    left = int(round((w - side) / 2.0))
    img = img.crop((left, top, left + side, top + side))
    img = img.resize((size, size), Image.BILINEAR)
    x = np.asarray(img).astype(np.float32)
    x = x / np.float32(255)
    x = (x - MEAN) / STD
    assert x.dtype == np.float32
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def load_images() -> np.ndarray:
    path = KRIEG / "images.npy"
    if not path.exists():
        path = SHARED_IMAGES
    images = np.load(path)
    assert images.shape == (92, 175, 175, 3) and images.dtype == np.uint8, images.shape
    return images


# ---------------------------------------------------------------------------
# onnxruntime reference
# ---------------------------------------------------------------------------

def session(model):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(serialize(model), so, providers=["CPUExecutionProvider"])


def with_all_outputs(model):
    """A copy of `model` with every node's output added as a graph output (shapes from ONNX
    shape inference, batch dim symbolic)."""
    import onnx
    from onnx import helper
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    shapes = {vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    m = copy.deepcopy(model)
    have = {o.name for o in m.graph.output}
    for node in m.graph.node:
        for t in node.output:
            if t not in have:
                m.graph.output.append(
                    helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, shapes[t]))
    return m, shapes


def reference_outputs(model, x):
    """Every tensor from onnx's own Python reference evaluator, with the LRN replaced by the
    spec's formula: onnx 1.23's reference LRN loops over the batch axis instead of the channel
    axis (onnx/onnx#7805, fixed upstream by #8331), which fails for N != C."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class LRN(OpRun):
        op_domain = ""

        def _run(self, x, alpha=None, beta=None, bias=None, size=None):
            c = x.shape[1]
            lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
            sq = (x.astype(np.float64) ** 2)
            s = np.zeros_like(sq)
            for i in range(c):
                s[:, i] = sq[:, max(0, i - lo):min(c, i + hi + 1)].sum(1)
            return ((x / (bias + alpha / size * s) ** beta).astype(x.dtype),)

    ref = ReferenceEvaluator(model, new_ops=[LRN])
    return dict(zip(ref.output_names, ref.run(None, {"image": x})))


def main():
    import onnx
    import onnxruntime as ort
    import PIL

    versions = {p: importlib.metadata.version(p)
                for p in ("onnx", "onnxruntime", "numpy", "pillow", "protobuf")}
    log("onnx fixtures: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    OUT.mkdir(parents=True, exist_ok=True)

    model = build_tiny_alexnet()
    data = serialize(model)
    assert serialize(build_tiny_alexnet()) == data, "model serialisation is not deterministic"
    (OUT / "tiny_alexnet.onnx").write_bytes(data)
    assert len(data) < 200 * 1024, len(data)
    back = onnx.load_from_string(data)
    onnx.checker.check_model(back, full_check=True)
    assert back.ir_version == IR_VERSION and back.opset_import[0].version == OPSET

    images = load_images()
    x = np.stack([preprocess(im) for im in images])  # [92, 3, 64, 64]
    assert x.shape == (92, 3, SIZE, SIZE) and x.dtype == np.float32
    np.save(OUT / "input_first.npy", x[0])

    full, inferred = with_all_outputs(model)
    sess = session(full)
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(None, {"image": x})))

    # the committed model alone gives the same probabilities
    prob_only = session(model).run(None, {"image": x})[0]
    np.testing.assert_array_equal(prob_only, outs["prob_out"])
    # batch of 92 vs one image at a time (what a per-image extractor does)
    max_batch_diff = {}
    for t in names:
        per = np.concatenate([sess.run([t], {"image": x[i:i + 1]})[0] for i in range(len(x))])
        max_batch_diff[t] = float(np.max(np.abs(per - outs[t])))

    # cross-check: onnx's reference evaluator (float32 NumPy) agrees with onnxruntime
    ref = reference_outputs(full, x)
    max_ref_diff = {}
    for t in names:
        d = np.abs(ref[t].astype(np.float64) - outs[t])
        max_ref_diff[t] = float(d.max())
        assert d.max() <= 1e-4 * max(1.0, float(np.abs(outs[t]).max())), (t, d.max())

    with open(OUT / "layers.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["node", "op_type", "output", "shape"])
        for node in model.graph.node:
            (t,) = node.output
            a = outs[t]
            assert a.dtype == np.float32 and a.shape[0] == len(x)
            assert list(a.shape[1:]) == inferred[t][1:], (t, a.shape, inferred[t])
            w.writerow([node.name, node.op_type, t, "x".join(str(d) for d in a.shape[1:])])

    np.testing.assert_allclose(outs["prob_out"].sum(1), 1.0, rtol=1e-5)
    stats = []
    for node in model.graph.node:
        (t,) = node.output
        a = outs[t]
        flat = a.reshape(len(x), -1)
        stats.append((t, "x".join(map(str, a.shape[1:])), float(np.abs(a).max()),
                      float((flat > 0).mean()), max_batch_diff[t], max_ref_diff[t]))
        if t in SAVED:
            n_img = CONV1_IMAGES if t == "conv1_out" else len(x)
            np.save(OUT / f"{t}.npy", np.ascontiguousarray(flat[:n_img], dtype=np.float32))
    for t, shape, mx, pos, bd, rd in stats:
        log(f"  {t:<12} {shape:>8}  max|a|={mx:.6g}  frac>0={pos:.3f}  "
            f"max|batch92 - one-by-one|={bd:.3g}  max|ort - onnx.reference|={rd:.3g}")

    write_readme(versions, stats)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    log(f"onnx fixtures total size: {total / 1024:.1f} KiB (model {len(data) / 1024:.1f} KiB); "
        f"prob argmax over 92 images: {np.bincount(outs['prob_out'].argmax(1), minlength=10).tolist()}")
    assert total < MAX_BYTES, total


def write_readme(versions, stats):
    rows = "\n".join(f"| {t} | {shape} | {mx:.4g} | {rd:.2g} |" for t, shape, mx, _, _, rd in stats)
    text = f"""# ONNX fixtures

Made by `scripts/python/make_fixtures_onnx.py` (or `make_fixtures.py onnx`); deterministic,
rerunning rewrites the same bytes. onnx {versions['onnx']}, onnxruntime
{versions['onnxruntime']}, numpy {versions['numpy']}, Pillow {versions['pillow']}.

## tiny_alexnet.onnx

AlexNet's architecture in miniature, random weights (numpy `default_rng({SEED_ALEXNET})`,
He-normal `N(0, 2 / fan_in)`, biases `U(-0.05, 0.05)`), opset {OPSET}, ir_version
{IR_VERSION}. Input `image` float32 `[N, 3, 64, 64]` (`N` symbolic); one graph output,
`prob_out` `[N, 10]`. Every node `X` writes the tensor `X_out`; weights are initializers
`X_W`, `X_B`. Gemm weights are stored `[out, in]` with `transB=1`.

conv1 (Conv 8@11x11, stride 4, pads 2) -> relu1 -> lrn1 (LRN size 5, alpha 1e-4, beta 0.75,
bias 2) -> pool1 (MaxPool 3x3 s2) -> conv2 (Conv 16@3x3 pad 1) -> relu2 -> pool2 (MaxPool
3x3 s2) -> conv3 (Conv 16@3x3 pad 1) -> relu3 -> add3 (Add relu3_out + pool2_out) ->
flatten (axis 1) -> fc6 (Gemm 64) -> relu6 -> fc7 (Gemm 32) -> relu7 -> fc8 (Gemm 10) ->
prob (Softmax axis 1).

`layers.csv`: `node,op_type,output,shape` for every node in graph order, the shape per image
(without the batch dimension) as onnxruntime produced it, dims joined by `x`.

## Preprocessing (Pillow + NumPy)

The 92 images of `tests/data/kriegeskorte2008/images.npy` (`[92, 175, 175, 3]` uint8 RGB;
read from `../shared/data/kriegeskorte2008/` when the repository has no copy), each:

1. `PIL.Image.fromarray(rgb)`;
2. crop the centred square of side `floor(0.875 * min(h, w) + 0.5)` (= 153), top
   `round((h - side) / 2)`, left `round((w - side) / 2)` (Python's round; = 11, 11);
3. `.resize((64, 64), Image.BILINEAR)` (Pillow's bilinear, which widens its filter support
   by the scale factor when downscaling, i.e. antialiased);
4. `np.asarray(img).astype(float32) / float32(255)` (as torchvision's `ToTensor`);
5. `(x - mean) / std`, float32, mean `(0.485, 0.456, 0.406)`, std `(0.229, 0.224, 0.225)`;
6. HWC -> CHW.

## Activations

onnxruntime on the CPU (`CPUExecutionProvider`), `graph_optimization_level = ORT_DISABLE_ALL`,
one intra-op and one inter-op thread, all 92 images as one batch, on a copy of the model with
every node output added as a graph output (the committed file has only `prob_out`).

| file | shape | dtype | what |
|---|---|---|---|
| input_first.npy | [3, 64, 64] | float32 | image 0 after the preprocessing above |
| conv1_out.npy | [{CONV1_IMAGES}, 1800] | float32 | conv1 output (before relu1), 8x15x15 flattened C order; first {CONV1_IMAGES} images only (size) |
| relu2_out.npy | [92, 784] | float32 | 16x7x7 |
| add3_out.npy | [92, 144] | float32 | 16x3x3 |
| fc6_out.npy | [92, 64] | float32 | fc6 output (before relu6) |
| relu7_out.npy | [92, 32] | float32 | |
| prob_out.npy | [92, 10] | float32 | softmax probabilities |

Rows are images in the order of images.npy; each row is the image's activation flattened in
C order over (C, H, W).

Max |activation| over the 92 images, per tensor (for choosing tolerances):

| tensor | shape per image | max abs | max abs difference, onnx.reference vs onnxruntime |
|---|---|---|---|
{rows}
"""
    (OUT / "README.md").write_text(text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["wide"]:
        if len(sys.argv) not in (3, 4):
            sys.exit("usage: make_fixtures_onnx.py wide OUT.onnx [SIZE]")
        write_wide(sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 224)
    elif len(sys.argv) > 1:
        sys.exit("usage: make_fixtures_onnx.py [wide OUT.onnx [SIZE]]")
    else:
        main()
