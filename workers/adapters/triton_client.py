"""A typed gRPC client for the two Triton models (no torch here).

- ``segment(images)``: uint8 RGB images already resized to S x S -> uint8 label maps [N, S, S].
- ``embed(crops)``: uint8 crops [N, 256, 256, 3] -> float32 L2-normalised embeddings [N, D].
- ``embedder()``: what answers ``embed``, read from the server (model name, served version, D from the config's
  EMBEDDINGS dims, WEIGHTS_ID parameter): the Milvus collection is named after it (``Embedder.collection``).

Batches larger than the model's ``max_batch_size`` are split into chunks sent concurrently (Triton's dynamic
batcher and several instances can then overlap them). Failures are classified for the worker runtime:
unreachable server, timeouts, models not (yet) loaded -> ``DependencyError`` (retry with backoff); an input the
client or the model rejects -> ``PoisonError`` (dead letter).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from workers.runtime.errors import DependencyError, PoisonError

# gRPC status codes that mean "the input itself is bad".
_POISON_STATUS = {"StatusCode.INVALID_ARGUMENT", "StatusCode.OUT_OF_RANGE"}


def _classify(exc: InferenceServerException, what: str) -> Exception:
    status = str(exc.status() or "")
    msg = f"{what}: {exc.message() or exc} [{status or 'no status'}]"
    if status in _POISON_STATUS:
        return PoisonError(msg, category="model_rejected")
    # UNAVAILABLE (down/unreachable), DEADLINE_EXCEEDED, NOT_FOUND/UNAVAILABLE (model not loaded), INTERNAL,
    # RESOURCE_EXHAUSTED, CANCELLED...: not the input's fault.
    return DependencyError("triton", msg)


@dataclass(frozen=True)
class Embedder:
    """The embedding model a server answers with: vectors of two different Embedders never share a collection."""

    model: str
    version: str
    dim: int
    weights_id: str = ""

    def collection(self, base: str) -> str:
        """``<base>__<model>_v<version>[_<weights id>]`` (Milvus: letters, digits and underscores, <= 255)."""
        parts = [self.model, f"v{self.version}"] + ([self.weights_id] if self.weights_id else [])
        return re.sub(r"[^A-Za-z0-9_]", "_", f"{base}__{'_'.join(parts)}")[:255]


class TritonModels:
    """The segmentation and embedding models of one Triton server, over gRPC."""

    def __init__(
        self, url: str, segformer_model: str = "segformer", embed_model: str = "resnet50", timeout_s: float = 60.0,
        *, ssl: bool = False,
    ):
        self.url = url
        self.segformer_model = segformer_model
        self.embed_model = embed_model
        self._embedder: Embedder | None = None
        self.timeout_s = float(timeout_s)
        self._client = grpcclient.InferenceServerClient(url=url, ssl=ssl)
        self._configs: dict[str, dict] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ state
    def ready(self) -> bool:
        """Server ready and both models ready (never raises)."""
        t = min(self.timeout_s, 5.0)
        try:
            return bool(
                self._client.is_server_ready(client_timeout=t)
                and self._client.is_model_ready(self.segformer_model, client_timeout=t)
                and self._client.is_model_ready(self.embed_model, client_timeout=t)
            )
        except Exception:  # noqa: BLE001 - a probe
            return False

    def model_config(self, model: str) -> dict:
        """The served config of ``model`` (cached)."""
        with self._lock:
            if model not in self._configs:
                try:
                    cfg = self._client.get_model_config(model, as_json=True, client_timeout=min(self.timeout_s, 10.0))
                except InferenceServerException as exc:
                    raise _classify(exc, f"config of {model}") from exc
                self._configs[model] = cfg.get("config", cfg)
            return self._configs[model]

    def embedder(self) -> Embedder:
        """Model, served version, dimension and weights id of the embedding model (cached; DependencyError when
        the server cannot say)."""
        if self._embedder is None:
            cfg = self.model_config(self.embed_model)
            _, out = self.tensor_names(self.embed_model)
            dims = [int(d) for d in next(o for o in cfg["output"] if o["name"] == out)["dims"]]
            try:
                meta = self._client.get_model_metadata(self.embed_model, as_json=True,
                                                       client_timeout=min(self.timeout_s, 10.0))
            except InferenceServerException as exc:
                raise _classify(exc, f"metadata of {self.embed_model}") from exc
            served = sorted(meta.get("versions") or ["1"], key=lambda v: int(v) if v.isdigit() else 0)
            wid = cfg.get("parameters", {}).get("WEIGHTS_ID", {}).get("string_value", "")
            self._embedder = Embedder(self.embed_model, served[-1], dims[-1], wid)
        return self._embedder

    def tensor_names(self, model: str) -> tuple[str, str]:
        """The input and output tensor names of ``model`` (its served config): each lookstream model takes one
        batch tensor and answers one (segmenter IMAGE -> LABELS, embedder CROPS -> EMBEDDINGS in this repository)."""
        cfg = self.model_config(model)
        ins, outs = cfg.get("input", []), cfg.get("output", [])
        if len(ins) != 1 or len(outs) != 1:
            raise DependencyError("triton", f"{model} serves {len(ins)} input(s) and {len(outs)} output(s); lookstream "
                                            "models take one batch tensor and answer one")
        return ins[0]["name"], outs[0]["name"]

    def max_batch(self, model: str) -> int:
        return max(1, int(self.model_config(model).get("max_batch_size", 1)))

    def _input_shape(self, model: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.model_config(model)["input"][0]["dims"])

    @property
    def segformer_size(self) -> int:
        """S: the square size the segformer model takes (from its served config)."""
        return self._input_shape(self.segformer_model)[0]

    @property
    def crop_shape(self) -> tuple[int, ...]:
        return self._input_shape(self.embed_model)

    # ------------------------------------------------------------------ inference
    def segment(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] images, each already S x S -> uint8 label maps [N, S, S]."""
        s = self.segformer_size
        if len(images) == 0:
            return np.zeros((0, s, s), np.uint8)
        for i, img in enumerate(images):
            img = np.asarray(img)
            if img.dtype != np.uint8 or img.shape != (s, s, 3):
                raise PoisonError(
                    f"segment: image {i} is {img.dtype} {list(img.shape)}; expected uint8 [{s}, {s}, 3] "
                    "(resize to the model's square size first)", category="bad_shape",
                )
        batch = np.ascontiguousarray(np.stack([np.asarray(im) for im in images]))
        return self._infer(self.segformer_model, *self.tensor_names(self.segformer_model), batch)

    def embed(self, crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """uint8 crops [N, 256, 256, 3] -> float32 [N, D], L2-normalised (D: the served model's EMBEDDINGS dims)."""
        shape = self.crop_shape
        arr = np.asarray(crops) if not isinstance(crops, np.ndarray) else crops
        if arr.ndim == 4 and arr.shape[0] == 0:
            return np.zeros((0, self.embedder().dim), np.float32)
        if arr.dtype != np.uint8 or arr.ndim != 4 or tuple(arr.shape[1:]) != shape:
            raise PoisonError(
                f"embed: crops are {arr.dtype} {list(arr.shape)}; expected uint8 [N, {', '.join(map(str, shape))}]",
                category="bad_shape",
            )
        return self._infer(self.embed_model, *self.tensor_names(self.embed_model), np.ascontiguousarray(arr))

    def _infer(self, model: str, in_name: str, out_name: str, batch: np.ndarray) -> np.ndarray:
        """Send ``batch`` in chunks of the model's max batch, concurrently; concatenate the outputs in order."""
        mb = self.max_batch(model)
        chunks = [batch[i: i + mb] for i in range(0, len(batch), mb)]
        if len(chunks) == 1:
            return self._infer_one(model, in_name, out_name, chunks[0])
        results: list = [None] * len(chunks)
        remaining = [len(chunks)]
        done = threading.Event()
        lock = threading.Lock()

        def callback(k, result, error):
            results[k] = error if error is not None else result.as_numpy(out_name)
            with lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

        for k, chunk in enumerate(chunks):
            try:
                self._client.async_infer(
                    model, self._inputs(in_name, chunk), callback=lambda result, error, k=k: callback(k, result, error),
                    outputs=[grpcclient.InferRequestedOutput(out_name)], client_timeout=self.timeout_s,
                )
            except InferenceServerException as exc:
                raise _classify(exc, f"{model} infer") from exc
        if not done.wait(self.timeout_s + 5.0):
            raise DependencyError("triton", f"{model}: no answer within {self.timeout_s:.0f} s")
        for r in results:
            if isinstance(r, InferenceServerException):
                raise _classify(r, f"{model} infer") from r
            if isinstance(r, BaseException):
                raise DependencyError("triton", f"{model} infer: {type(r).__name__}: {r}") from r
        return np.concatenate(results)

    def _infer_one(self, model: str, in_name: str, out_name: str, chunk: np.ndarray) -> np.ndarray:
        try:
            result = self._client.infer(
                model, self._inputs(in_name, chunk), outputs=[grpcclient.InferRequestedOutput(out_name)],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise _classify(exc, f"{model} infer") from exc
        out = result.as_numpy(out_name)
        if out is None or len(out) != len(chunk):
            raise DependencyError("triton", f"{model}: {out_name} missing or of the wrong length in the reply")
        return out

    @staticmethod
    def _inputs(name: str, arr: np.ndarray) -> list:
        inp = grpcclient.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
        inp.set_data_from_numpy(arr)
        return [inp]

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "TritonModels":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
