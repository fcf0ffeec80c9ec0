r"""GPU latency of the whole scoring path (backbone -> patch NN search -> anomaly map -> score), batch 1.

The lent GPU machine has torch + CUDA and timm, but neither anomalib nor TensorRT. ``export`` writes, from a
bundle's enrollment, two forms of the same scorer into one folder:

- ``scorer.ts``: the trace of :class:`flows.anomaly.model.AnomalyScorer` (needs only torch to load, if the GPU's
  torch reads this file format);
- ``plain.pt``: plain tensors (timm backbone weights, the memory bank, the map's two matrices) that
  :class:`PlainScorer` rebuilds with timm alone, in case the trace does not load there. It also lets the
  backbone run in fp16 while the search stays in fp32, where |x|^2 + |m|^2 - 2x.m would lose digits;

plus one reference frame and the CPU scorer's score and map for it, so the GPU run prints how far each variant
lands from the CPU. ``run`` times every variant eagerly and replayed from a CUDA graph (the yardstick's way),
optionally ``torch.compile``d, and writes the figures as JSON.

    .venv/bin/python benchmarks/gpu_latency.py export models/elpv/bundle benchmarks/out/gpu/elpv \
        --image data/elpv/test/defect/cell0002.png
    python3 benchmarks/gpu_latency.py run benchmarks/out/gpu/elpv --n 1000 --compile --out gpu_elpv.json  # GPU
    .venv/bin/python benchmarks/gpu_latency.py run benchmarks/out/gpu/elpv --device cpu --n 5           # dry run

The folder travels to the GPU machine as a carried path (``benchmarks/out`` is git-ignored); ELPV's is ~43 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


class PlainScorer(torch.nn.Module):
    """The PatchCore scoring path rebuilt from timm and plain tensors: the same computation as
    ``AnomalyScorer`` (features -> 3x3 average pool -> bilinear upsample and concatenate -> exact nearest bank
    patch -> map = rows @ distances @ cols^T -> max), without anomalib. ``half_backbone`` runs the convolutions
    in fp16 (channels-last) and the search and map in fp32. ``nearest="min"`` takes the nearest bank patch with
    a plain minimum instead of ``topk(1)`` (same values; the reduction the GPU may run faster)."""

    def __init__(self, blob: dict, half_backbone: bool = False, nearest: str = "topk") -> None:
        super().__init__()
        import timm

        self.features = timm.create_model(blob["backbone"], pretrained=False, pretrained_cfg=None,
                                          features_only=True, exportable=True, out_indices=blob["out_indices"])
        self.features.load_state_dict(blob["backbone_state"])
        self.features.eval()
        self.half_backbone = half_backbone
        self.nearest = nearest
        if half_backbone:
            self.features.half().to(memory_format=torch.channels_last)
        bank = blob["bank"].float()
        self.register_buffer("bank_t", bank.t().contiguous())
        self.register_buffer("bank_sq", (bank * bank).sum(1, keepdim=True).t().contiguous())
        self.register_buffer("rows", blob["map_rows"].float())
        self.register_buffer("cols_t", blob["map_cols"].float().t().contiguous())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.half_backbone:
            x = x.half().contiguous(memory_format=torch.channels_last)
        feats = [F.avg_pool2d(f, 3, 1, 1) for f in self.features(x)]
        emb = feats[0]
        for f in feats[1:]:
            emb = torch.cat((emb, F.interpolate(f, size=emb.shape[-2:], mode="bilinear")), 1)
        emb = emb.float()
        _, dim, h, w = emb.shape
        flat = emb.permute(0, 2, 3, 1).reshape(-1, dim)
        partial = torch.addmm(self.bank_sq, flat, self.bank_t, alpha=-2.0)
        partial = partial.amin(1) if self.nearest == "min" else partial.topk(1, dim=1, largest=False)[0][:, 0]
        dist = (partial + (flat * flat).sum(1)).clamp_min(0.0).sqrt().reshape(-1, 1, h, w)
        amap = self.rows @ dist @ self.cols_t
        return amap.amax(dim=(1, 2, 3)), amap


def export(bundle: str, out: str, image: str | None = None) -> None:
    """Write ``scorer.ts``, ``plain.pt`` and one reference frame's CPU outputs for ``bundle`` into ``out``.

    The frame is ``image`` cropped to the bundle's ROI at engine resolution, as the station does on the CPU before
    normalising (random pixels without ``image``); the GPU run uploads it as uint8 and normalises it there too."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import numpy as np

    from flows.anomaly.enroll import load_enrollment, restore_model
    from serving.engine.preprocess import InputSpec, Roi, display_crop
    from serving.images import read_image

    ckpt = load_enrollment(bundle)
    spec = InputSpec(**ckpt["input"])
    if image:
        roi = json.loads((Path(bundle) / "manifest.json").read_text()).get("roi")
        crop = display_crop(read_image(image), spec, Roi(**roi) if roi else None)
    else:
        crop = np.random.default_rng(0).integers(0, 256, (spec.height, spec.width, 3), dtype=np.uint8)
    report = write_folder(restore_model(ckpt), spec, crop, Path(out))
    print(json.dumps({"bundle": bundle, "image": image, **report}, indent=2))


def write_folder(model, spec, crop, folder: Path) -> dict:
    """The GPU run's inputs for a PatchCore ``model`` taking ``spec``'s size, with ``crop`` (uint8 HxWx3 at engine
    resolution) as the reference frame; returns how far the rebuilt scorer and the trace land from
    ``AnomalyScorer`` on the CPU. ``model`` is changed in place (fixed padding, its bank moved out)."""
    import numpy as np
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    from flows.anomaly.model import AnomalyScorer
    from flows.anomaly.onnx_graph import static_same_padding
    from serving.engine.preprocess import normalize

    if not isinstance(model, PatchcoreModel):
        raise SystemExit(f"the GPU bench times PatchCore bundles; this one is {type(model).__name__}")
    size = spec.height, spec.width
    scorer = AnomalyScorer(model, size=size).eval()  # map matrices as buffers: the trace moves to the GPU whole
    bank = model.memory_bank.float().clone()
    model.memory_bank = torch.empty(0)  # the scorer holds its own transposed copy; the trace need not carry two
    frame = torch.from_numpy(normalize(crop, spec))[None]
    folder.mkdir(parents=True, exist_ok=True)
    std = np.asarray(spec.std, np.float32)
    with torch.no_grad():
        score, amap, _, _ = scorer(frame)
        static_same_padding(scorer, *size)  # as export does: no shape arithmetic left in the trace
        traced = torch.jit.trace(scorer, torch.zeros(1, 3, *size), check_trace=False)
        traced.save(str(folder / "scorer.ts"))
        blob = {
            "backbone": model.backbone,
            "out_indices": list(model.feature_extractor.idx),
            "backbone_state": model.feature_extractor.feature_extractor.state_dict(),
            "bank": bank,
            "map_rows": scorer.map_rows.clone(),
            "map_cols": scorer.map_cols.clone(),
            "gain": torch.from_numpy(np.float32(spec.scale) / std),
            "offset": torch.from_numpy(-np.asarray(spec.mean, np.float32) / std),
            "frame_u8": torch.from_numpy(np.ascontiguousarray(crop)),
            "frame": frame,
            "ref_score": score,
            "ref_map": amap,
        }
        torch.save(blob, folder / "plain.pt")
        plain = PlainScorer(blob).eval()
        plain_score, plain_map = plain(frame)
        io_score, _ = FrameToScore(plain, blob)(blob["frame_u8"])
        trace_score = traced(frame)[0]
    return {
        "out": str(folder), "input": list(size), "bank": list(bank.shape), "cpu_score": float(score[0]),
        "plain_minus_scorer_score": float((plain_score - score).abs().max()),
        "plain_minus_scorer_map": float((plain_map - amap).abs().max()),
        "uint8_path_minus_scorer_score": float((io_score - score).abs().max()),
        "trace_minus_scorer_score": float((trace_score - score).abs().max()),
        "bytes": {p.name: p.stat().st_size for p in sorted(folder.iterdir())},
    }


class FrameToScore(torch.nn.Module):
    """A camera crop as the station hands it over (uint8 HxWx3 RGB at engine resolution, already on the device)
    -> the scorer's (score, map): the normalisation ``(x * scale - mean) / std`` runs on the GPU too."""

    def __init__(self, scorer: torch.nn.Module, blob: dict) -> None:
        super().__init__()
        self.scorer = scorer
        self.register_buffer("gain", blob["gain"].float().reshape(1, 3, 1, 1))
        self.register_buffer("offset", blob["offset"].float().reshape(1, 3, 1, 1))

    def forward(self, frame_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = frame_u8.permute(2, 0, 1)[None].float() * self.gain + self.offset
        return self.scorer(x)[:2]


def _time(fn, n: int, sync) -> dict:
    times = []
    for _ in range(n):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return {"p50_ms": round(times[len(times) // 2], 4), "p99_ms": round(times[max(0, int(len(times) * 0.99) - 1)], 4),
            "n": n}


def _capture(m, static_x: torch.Tensor):
    """(graph, its outputs): ``m`` on the static input buffer, captured once in a CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
        for _ in range(3):
            m(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = m(static_x)
    graph.replay()
    torch.cuda.synchronize()
    return graph, out


def _graph(m, x: torch.Tensor, n: int, ref: dict | None) -> dict:
    """``m`` replayed from a CUDA graph: p50/p99 and the replayed outputs' distance from the CPU reference; or
    the capture's error."""
    try:
        graph, out = _capture(m, x.clone())
    except Exception as exc:  # noqa: BLE001 -- any capture failure is a result to print, not a crash
        return {"error": _error(exc)}
    return {**_time(graph.replay, n, torch.cuda.synchronize), **_parity(out, ref)}


class BackboneOnly(torch.nn.Module):
    """The fp16 backbone of a :class:`PlainScorer` alone: the floor the whole path is compared with."""

    def __init__(self, plain: PlainScorer) -> None:
        super().__init__()
        self.features = plain.features

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.features(x.half().contiguous(memory_format=torch.channels_last))


def _station_io(blob: dict, dev: torch.device, n: int, ref: dict, compile_: bool = False, **kw) -> dict:
    """What a station on this GPU would wait for per part: the uint8 crop copied from pinned host memory,
    normalised and scored in one graph replay (fp32), and the score read back for the gate."""
    m = FrameToScore(PlainScorer(blob, **kw), blob).eval().to(dev)
    if compile_:
        m = torch.compile(m)
    host = blob["frame_u8"].pin_memory()
    static = host.to(dev)
    with torch.inference_mode():
        m(static)  # compiles, if compiled, before the capture's warm-up
        graph, out = _capture(m, static)

        def step() -> float:
            static.copy_(host, non_blocking=True)
            graph.replay()
            return out[0].item()

        return {**_time(step, n, torch.cuda.synchronize), **_parity(out, ref)}


def _error(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # TorchScript puts the failing operation's own message last, under a traceback of the trace
    return f"{type(exc).__name__}: " + " | ".join(lines[:1] + lines[-3:] if len(lines) > 4 else lines)


def _parity(out, ref: dict | None) -> dict:
    if ref is None:
        return {}
    return {"score": round(float(out[0].float().cpu()[0]), 4),
            "score_abs_diff_vs_cpu": float((out[0].float().cpu() - ref["score"]).abs().max()),
            "map_abs_diff_vs_cpu": float((out[1].float().cpu() - ref["map"]).abs().max())}


def _variants(folder: Path, dev: torch.device, compile_: bool):
    """(name, module factory, input dtype) of every variant: the trace in fp32 and fp16, the plain rebuild in
    fp32 and with an fp16 backbone, and that backbone alone."""
    blob = torch.load(folder / "plain.pt", map_location="cpu", weights_only=True)

    def traced(dtype):
        return lambda: torch.jit.load(str(folder / "scorer.ts"), map_location=dev).eval().to(dtype)

    return blob, [
        ("trace_fp32", traced(torch.float32), torch.float32),
        ("trace_fp32_nofuser", traced(torch.float32), torch.float32),
        ("trace_fp16", traced(torch.float16), torch.float16),
        ("plain_fp32", lambda: PlainScorer(blob).eval().to(dev), torch.float32),
        ("plain_fp16_backbone", lambda: PlainScorer(blob, half_backbone=True).eval().to(dev), torch.float32),
        ("backbone_only_fp16", lambda: BackboneOnly(PlainScorer(blob, half_backbone=True)).eval().to(dev),
         torch.float32),
    ] + ([
        # inductor's fused kernels, replayed from our own CUDA graph
        (f"{name}_compiled", lambda kw=kw: torch.compile(PlainScorer(blob, **kw).eval().to(dev)), torch.float32)
        for name, kw in (("plain_fp32", {}), ("plain_fp32_min", {"nearest": "min"}),
                         ("plain_fp16_backbone", {"half_backbone": True}))
    ] if compile_ else [])


def run(folder: str, device: str = "cuda", n: int = 500, compile_: bool = False, out: str | None = None) -> dict:
    """Time every variant at batch 1 on ``device``; on CUDA also from a CUDA graph (and torch.compile'd)."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # the profiling executor re-optimises the trace during its first runs, which breaks graph capture
    torch._C._jit_set_profiling_executor(False)
    blob, variants = _variants(Path(folder), dev, compile_ and cuda)
    ref = {"score": blob["ref_score"].float(), "map": blob["ref_map"].float()}
    results: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
                     "input": list(blob["frame"].shape), "bank": list(blob["bank"].shape), "variants": {}}

    def save() -> None:
        if out:
            Path(out).write_text(json.dumps(results, indent=2))

    for name, make, dtype in variants:
        entry = results["variants"][name] = {}
        t0 = time.perf_counter()
        check = None if name.startswith("backbone") else ref
        # TorchScript's own fusers compile kernels during the first runs; one trace variant runs without them, to
        # tell whether they are what a capture trips on
        fuser = torch.jit.fuser("none") if name.endswith("nofuser") else contextlib.nullcontext()
        try:
            m = make()
            x = blob["frame"].to(dev, dtype)
            with torch.inference_mode(), fuser:
                for _ in range(20 if cuda else 2):
                    m(x)
                entry["build_and_warm_s"] = round(time.perf_counter() - t0, 1)
                entry["eager"] = {**_time(lambda: m(x), n, sync), **_parity(m(x), check)}
                if cuda:
                    entry["cuda_graph"] = _graph(m, x, n, check)
        except Exception as exc:  # noqa: BLE001 -- one variant failing must not lose the others' figures
            entry["error"] = _error(exc)
        print(name, json.dumps(entry), flush=True)
        save()
    for name, kw in (("station_io", {}), ("station_io_compiled", {"compile_": True, "nearest": "min"})):
        if cuda and (compile_ or name == "station_io"):
            try:
                results[name] = _station_io(blob, dev, n, ref, **kw)
            except Exception as exc:  # noqa: BLE001
                results[name] = {"error": _error(exc)}
            print(name, json.dumps(results[name]), flush=True)
            save()
    print(json.dumps(results, indent=2))
    return results


def main() -> None:
    """``export BUNDLE OUT`` here, ``run FOLDER`` on the GPU machine."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("bundle")
    e.add_argument("out")
    e.add_argument("--image", help="a real part's image for the reference frame (random pixels without it)")
    r = sub.add_parser("run")
    r.add_argument("folder")
    r.add_argument("--device", default="cuda")
    r.add_argument("--n", type=int, default=500)
    r.add_argument("--compile", action="store_true", dest="compile_")
    r.add_argument("--out")
    args = parser.parse_args()
    if args.cmd == "export":
        export(args.bundle, args.out, args.image)
    else:
        run(args.folder, args.device, args.n, args.compile_, args.out)


if __name__ == "__main__":
    main()
