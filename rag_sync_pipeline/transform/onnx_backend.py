"""The embedding model on ONNX Runtime: exported once from the local model, optionally int8-quantized.

The export runs on this machine from the model folder (never downloaded) into a cache folder
(`RAG_ONNX_CACHE_DIR`, default ./data/models), keyed by the model's weights, and is reused by every later
process. Inference needs only onnxruntime and tokenizers: mean pooling over the attention mask and L2
normalisation, as the sentence-transformers pipeline of all-MiniLM-L6-v2 does. The int8 model is ONNX
Runtime's dynamic quantization (weights int8 per channel, activations quantized per batch) of the fp32 export
after a SmoothQuant-style rescaling (`transform.onnx_smoothing`).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np

from rag_sync_pipeline.settings import DEFAULT_EMBEDDING_BATCH_SIZE

_EXPORT_LOCK = threading.Lock()


def cache_root() -> Path:
    return Path(os.environ.get("RAG_ONNX_CACHE_DIR", "").strip() or Path.cwd() / "data" / "models")


def _weights_key(folder: Path) -> str:
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for name in sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json")):
        stat = (folder / name).stat()
        digest.update(f"{name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:16]


def export_paths(source: str) -> tuple[Path, Path]:
    folder = Path(source)
    target = cache_root() / f"{folder.resolve().name}-{_weights_key(folder)}"
    return target / "model.onnx", target / "model_qint8_smoothed.onnx"


def _export(folder: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel

    class LastHiddenState(torch.nn.Module):  # positional inputs in a fixed order, one output
        def __init__(self) -> None:
            super().__init__()
            self.model = AutoModel.from_pretrained(str(folder)).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    model = LastHiddenState().eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = {name: torch.ones((2, 8), dtype=torch.long) for name in names}
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    partial = _partial(target)
    with torch.no_grad():
        torch.onnx.export(model, (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"]),
                          str(partial), input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    partial.replace(target)  # another process never sees half a file


def _quantize(folder: Path, fp32: Path, target: Path) -> None:
    from rag_sync_pipeline.transform import onnx_smoothing

    tokenizer = load_tokenizer(folder)
    smoothed, partial = _partial(target, "smoothed"), _partial(target)
    try:
        onnx_smoothing.smooth(fp32, smoothed, lambda texts: model_inputs(tokenizer, texts))
        onnx_smoothing.quantize(smoothed, partial)
    finally:
        smoothed.unlink(missing_ok=True)
    partial.replace(target)


def _partial(target: Path, kind: str = "partial") -> Path:
    """A name of this process's own for a file being written: another process exporting at the same time
    writes its own, and the rename into place is atomic."""
    return target.with_name(f"{target.stem}.{os.getpid()}.{kind}.onnx")


def load_tokenizer(folder: Path):
    """The model's fast tokenizer, truncating at its window and padding each batch to its longest text."""
    from tokenizers import Tokenizer

    config = json.loads((folder / "sentence_bert_config.json").read_text())
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(int(config.get("max_seq_length", 256)))
    tokenizer.enable_padding()
    return tokenizer


def model_inputs(tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    encodings = tokenizer.encode_batch(texts)
    return {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}


def ensure_exported(source: str, quantized: bool) -> Path:
    """The ONNX file for the model folder `source`, exported (and quantized) now if it is not cached yet."""
    folder = Path(source)
    if not folder.is_dir():
        raise ValueError(f"the ONNX backends export a local model folder; {source!r} is not one")
    fp32, int8 = export_paths(source)
    with _EXPORT_LOCK:
        fp32.parent.mkdir(parents=True, exist_ok=True)
        if not fp32.exists():
            _export(folder, fp32)
        if quantized and not int8.exists():
            _quantize(folder, fp32, int8)
    return int8 if quantized else fp32


class OnnxSentenceModel:
    """Enough of SentenceTransformer's interface for `Embedder`: encode, the vector size, the window."""

    def __init__(self, folder: Path, onnx_file: Path) -> None:
        import onnxruntime

        self.tokenizer_file = load_tokenizer(folder)
        self.max_seq_length = self.tokenizer_file.truncation["max_length"]
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.dimension = int(self.session.get_outputs()[0].shape[-1]) if isinstance(
            self.session.get_outputs()[0].shape[-1], int) else None

    def get_embedding_dimension(self) -> int:
        return self.dimension or int(self.encode(["dimension"]).shape[1])

    def _batch(self, texts: list[str]) -> np.ndarray:
        feed = model_inputs(self.tokenizer_file, texts)
        hidden = self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0]
        mask = feed["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def encode(self, texts: list[str], batch_size: int = DEFAULT_EMBEDDING_BATCH_SIZE, **_options) -> np.ndarray:
        # Longest first, as sentence-transformers does, so each batch pads to similar lengths.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), 0), dtype=np.float32)
        parts = [self._batch([texts[i] for i in order[s:s + batch_size]]) for s in range(0, len(order), batch_size)]
        if parts:
            out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
            out[order] = np.concatenate(parts)
        return out


def load_onnx_model(source: str, quantized: bool) -> OnnxSentenceModel:
    return OnnxSentenceModel(Path(source), ensure_exported(source, quantized))
