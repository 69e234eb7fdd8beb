from os import PathLike
from typing import Any, Callable, Dict, List, Optional, Union

_Path = Union[str, "PathLike[str]"]

class GpLiteError(Exception):
    """An error gp-lite reported; the message names the file, line and field."""

class Entity:
    """One entity of a text: `text == source[start:end]` (character offsets)."""
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def label(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def score(self) -> float: ...
    def to_dict(self) -> Dict[str, Any]:
        """As `gp-lite predict` writes it: start, end, type, text, score."""

class Model:
    """A trained model directory, loaded once."""
    @staticmethod
    def load(path: _Path, threads: int = 0, precision: Optional[str] = None) -> "Model": ...
    @property
    def labels(self) -> List[str]: ...
    def predict(
        self,
        texts: List[str],
        flat: Optional[bool] = None,
        threshold: Optional[float] = None,
        batch_size: int = 32,
    ) -> List[List[Entity]]: ...

def evaluate(
    model: _Path,
    data: _Path,
    flat: Optional[bool] = None,
    threshold: Optional[float] = None,
    threads: int = 0,
) -> Dict[str, Any]:
    """precision, recall, f1, gold, predicted, correct, and per_type (the same per type)."""

def train(
    train: _Path,
    out: _Path,
    dev: Optional[_Path] = None,
    *,
    init: Optional[_Path] = None,
    config: Optional[str] = None,
    vocab: Optional[_Path] = None,
    head: str = "gp",
    epochs: Optional[int] = None,
    batch_size: Optional[int] = None,
    lr: Optional[float] = None,
    head_lr: Optional[float] = None,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    max_len: int = 256,
    dropout: Optional[float] = None,
    seed: int = 42,
    threads: int = 0,
    tokenization: str = "auto",
    head_size: int = 64,
    rope: bool = True,
    min_char_count: int = 1,
    stop_after: Optional[int] = None,
    checkpoint_every: Optional[int] = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: Optional[Callable[[Dict[str, Any]], None]] = None,
    precision: str = "f32",
) -> Dict[str, Any]:
    """Trains as `gp-lite train` does and writes the model to `out`; returns training.json.
    `precision="bf16"` runs the training products on bf16 operands (`--precision bf16`)."""
