"""What the Triton client reads from a served model config (pure logic: the config is given, no server)."""

import pytest

from workers.adapters.triton_client import TritonModels
from workers.runtime.errors import DependencyError


def _client(configs: dict) -> TritonModels:
    t = TritonModels("127.0.0.1:1", segformer_model="seg", embed_model="emb")
    t._configs.update(configs)  # as if fetched from the server (model_config caches here)
    return t


def test_tensor_names_and_embedder_width_come_from_the_served_config():
    t = _client({
        "seg": {"input": [{"name": "PIXELS", "dims": [96, 96, 3]}], "output": [{"name": "MAP", "dims": [96, 96]}]},
        "emb": {"input": [{"name": "PATCHES", "dims": [224, 224, 3]}], "output": [{"name": "VEC", "dims": [768]}],
                "max_batch_size": 4},
    })
    t._client.get_model_metadata = lambda *a, **k: {"versions": ["1", "3"]}  # the one server call embedder() makes
    assert t.tensor_names("seg") == ("PIXELS", "MAP")
    assert t.tensor_names("emb") == ("PATCHES", "VEC")
    assert t.segformer_size == 96 and t.crop_shape == (224, 224, 3) and t.max_batch("emb") == 4
    e = t.embedder()
    assert (e.model, e.version, e.dim) == ("emb", "3", 768)


def test_a_model_with_two_outputs_is_refused_with_its_name():
    t = _client({"emb": {"input": [{"name": "CROPS", "dims": [256, 256, 3]}],
                         "output": [{"name": "EMBEDDINGS", "dims": [2048]}, {"name": "LOGITS", "dims": [1000]}]}})
    with pytest.raises(DependencyError, match="emb serves 1 input.*2 output"):
        t.tensor_names("emb")
