"""The ONNX Runtime backends against the sentence-transformers model they were exported from."""

from pathlib import Path

import numpy as np
import pytest

from rag_sync_pipeline.settings import default_model_path
from rag_sync_pipeline.transform.embedding import Embedder, model_id_for
from rag_sync_pipeline.transform.onnx_backend import (
    OnnxSentenceModel,
    ensure_exported,
    export_paths,
    load_tokenizer,
    model_inputs,
)
from rag_sync_pipeline.transform.onnx_smoothing import calibration_texts, smooth

SENTENCES = [
    "The database fails over to the replica when the primary stops answering health checks.",
    "Employees get 28 days of paid annual leave per year.",
    "Meals on business trips are reimbursed up to EUR 45 per day.",
    "Restart the ingestion worker with systemctl restart ingest after changing its configuration.",
    "```python\ndb = lancedb.connect(uri)\ntable = db.open_table('embeddings')\n```",
    "| region | latency p95 |\n|---|---|\n| eu-west | 120 ms |\n| us-east | 95 ms |",
]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAG_ONNX_CACHE_DIR", str(tmp_path_factory.mktemp("onnx_models")))
        yield


def test_onnx_fp32_and_int8_vectors_agree_with_the_torch_model(embedder, onnx_cache):
    reference = embedder.encode(SENTENCES)
    fp32 = Embedder(model_id_for(default_model_path(), "onnx"), source=default_model_path(), backend="onnx")
    int8 = Embedder(model_id_for(default_model_path(), "onnx-int8"), source=default_model_path(), backend="onnx-int8")
    fp32_vectors, int8_vectors = fp32.encode(SENTENCES), int8.encode(SENTENCES)
    assert all(path.is_file() for path in export_paths(default_model_path()))  # exported into the cache, once
    # The chunker's tokenizer and window still come from the model folder once the ONNX model is loaded.
    assert int8.tokenizer.encode(SENTENCES[0]).ids == embedder.tokenizer.encode(SENTENCES[0]).ids
    assert (int8.max_seq_length, int8.dimension) == (embedder.max_seq_length, embedder.dimension) == (256, 384)
    assert fp32_vectors.shape == int8_vectors.shape == reference.shape == (len(SENTENCES), 384)
    assert np.allclose(np.linalg.norm(int8_vectors, axis=1), 1.0, atol=1e-4)
    assert (fp32_vectors * reference).sum(axis=1).min() > 0.9999
    # Smoothed before quantizing: plain dynamic int8 gave a mean of about 0.993 on real prose.
    int8_cosines = (int8_vectors * reference).sum(axis=1)
    print(f"int8 cosine to fp32: mean {int8_cosines.mean():.4f}, min {int8_cosines.min():.4f}")
    assert int8_cosines.min() > 0.985 and int8_cosines.mean() > 0.995
    # Ranking survives quantization: each sentence's nearest neighbour among the others is the same.
    nearest = lambda v: np.argsort(-(v @ v.T), axis=1)[:, 1]  # noqa: E731
    assert (nearest(int8_vectors) == nearest(reference)).mean() >= 5 / 6


def test_smoothing_leaves_the_fp32_model_s_vectors_unchanged(onnx_cache, tmp_path):
    """The rescaling moves range from activations into weights; in fp32 the model computes the same thing."""
    folder = Path(default_model_path())
    fp32 = ensure_exported(str(folder), quantized=False)
    smoothed = tmp_path / "smoothed.onnx"
    tokenizer = load_tokenizer(folder)
    smooth(fp32, smoothed, lambda texts: model_inputs(tokenizer, texts))
    before = OnnxSentenceModel(folder, fp32).encode(SENTENCES)
    after = OnnxSentenceModel(folder, smoothed).encode(SENTENCES)
    assert (before * after).sum(axis=1).min() > 0.99999
    assert len(calibration_texts()) == 64  # calibrated on the bundled sample corpus


def test_int8_vectors_are_another_model_and_fp32_onnx_is_the_same_one():
    base = model_id_for(default_model_path())
    assert model_id_for(default_model_path(), "onnx") == base
    assert model_id_for(default_model_path(), "onnx-int8") == base + "+onnx-int8"
