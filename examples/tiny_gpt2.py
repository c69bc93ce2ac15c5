"""A randomly initialised tiny GPT-2 for the example server: real transformer, no downloads.

The weights are random (seeded) because the example exists to produce realistic *serving*
behaviour (prefill cost growing with prompt length, per-token decode steps, padding waste
under batching), not sensible text. There is no tokenizer: prompts are synthetic token-id
lists of the requested length, which is all the SDK needs for exact token counts and
fingerprints. Everything runs on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.generation.streamers import BaseStreamer

MODEL_NAME = "gpt2-tiny"


@dataclass(frozen=True)
class TinyGPT2Spec:
    """Shape of the tiny model. ``n_positions`` bounds prompt + output tokens."""

    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    vocab_size: int = 2048
    n_positions: int = 1024
    seed: int = 0

    @property
    def pad_token_id(self) -> int:
        # The last id doubles as pad and EOS; prompts never contain it, and min_new_tokens
        # keeps generation from stopping at it, so every request gets exactly n tokens.
        return self.vocab_size - 1


# Called once per decoding step with (step index, the new token id of every row).
OnStep = Callable[[int, list[int]], None]


class _StepStreamer(BaseStreamer):
    """Hands each decoding step's tokens to a callback (the first ``put`` is the prompt)."""

    def __init__(self, on_step: OnStep) -> None:
        self._on_step = on_step
        self._prompt_seen = False
        self._step = 0

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._on_step(self._step, value.reshape(-1).tolist())
        self._step += 1

    def end(self) -> None:
        pass


class TinyGPT2:
    """The model plus the one generation call the server makes.

    Not thread-safe: the server calls :meth:`generate` from a single worker thread.
    """

    def __init__(self, spec: TinyGPT2Spec | None = None) -> None:
        self.spec = spec or TinyGPT2Spec()
        s = self.spec
        config = GPT2Config(
            n_layer=s.n_layer,
            n_head=s.n_head,
            n_embd=s.n_embd,
            vocab_size=s.vocab_size,
            n_positions=s.n_positions,
            bos_token_id=s.pad_token_id,
            eos_token_id=s.pad_token_id,
            pad_token_id=s.pad_token_id,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            self.model = GPT2LMHeadModel(config).eval()
        self.name = MODEL_NAME

    def prompt_ids(self, length: int, seed: int) -> list[int]:
        """A synthetic prompt of exactly ``length`` token ids (never the pad id)."""
        if length < 1:
            raise ValueError(f"prompt length must be >= 1, got {length}")
        rng = np.random.default_rng(seed)
        return rng.integers(0, self.spec.pad_token_id, size=length).tolist()

    def pad_left(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad a batch (decoder-only models continue from the right end) and build its
        attention mask. Returns ``(input_ids, attention_mask)``, both ``[batch, max_len]``."""
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.spec.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {row} of the batch is empty")
            ids[row, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt):] = 1
        return ids, mask

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: Sequence[int],
        on_step: OnStep | None = None,
    ) -> list[list[int]]:
        """Greedy generation for a batch in ONE ``model.generate`` call.

        Every row decodes ``max(max_new_tokens)`` steps (that is what a static batch costs);
        row ``i`` then gets exactly its first ``max_new_tokens[i]`` new ids. ``on_step``, if
        given, is called from inside ``generate`` after each decoding step (streaming). Raises
        ``ValueError`` if a prompt plus its output would not fit ``n_positions``.
        """
        if len(prompts) != len(max_new_tokens) or not prompts:
            raise ValueError("generate: need one max_new_tokens per prompt, and >= 1 prompt")
        steps = max(max_new_tokens)
        if min(max_new_tokens) < 1:
            raise ValueError("generate: max_new_tokens must be >= 1")
        ids, mask = self.pad_left(prompts)
        if ids.shape[1] + steps > self.spec.n_positions:
            raise ValueError(
                f"generate: {ids.shape[1]} prompt + {steps} new tokens exceed n_positions="
                f"{self.spec.n_positions}"
            )
        with torch.inference_mode():
            out = self.model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=steps,
                min_new_tokens=steps,
                do_sample=False,
                pad_token_id=self.spec.pad_token_id,
                streamer=_StepStreamer(on_step) if on_step is not None else None,
            )
        new = out[:, ids.shape[1]:]
        if new.shape[1] != steps:
            raise RuntimeError(f"generate produced {new.shape[1]} tokens, expected {steps}")
        return [new[row, :n].tolist() for row, n in enumerate(max_new_tokens)]
