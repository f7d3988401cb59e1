"""Reading checkpoints a user points at: one loader for train.py's runs (engine.results), test.py, --resume,
--model_pretrain and the fine-tuning stage (finetuning.trainer), so every file is read with ``weights_only=True``
and a bad one is one line."""

from common.errors import DataError


def load_checkpoint(path, what, fix, mmap=False):
    """``torch.load`` of a user-given checkpoint (a run's ``best.pth`` or ``last.pth``, ``--model_pretrain``) onto
    the CPU, with ``weights_only=True``: tensors, numbers, strings and containers only. A file that cannot be read
    that way (truncated, not a checkpoint, or holding objects that weights_only loading refuses, such as a pickled
    class) is a :class:`DataError` in one line naming ``what``, the file and ``fix``."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise DataError(f"{what} '{path}' does not exist; {fix}") from None
    except MemoryError:
        raise
    except Exception as e:  # torch raises RuntimeError, OSError, UnpicklingError, EOFError, ... for a bad file
        raise DataError(f"{what} '{path}' cannot be read ({_load_problem(e)}); {fix}") from None


def _load_problem(e):
    """The reason of a failed ``torch.load`` in a few words (torch's own messages run over many lines)."""
    import re

    text = str(e)
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused or "Weights only load failed" in text:
        what = f" ({refused.group(1)})" if refused else ""
        return (f"it holds an object{what} that loading with weights_only=True refuses: not a checkpoint this project "
                "wrote, whose files hold tensors, numbers and strings only")
    first = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
    first = first.split(". ")[0].rstrip(".")[:160]  # torch adds advice that does not apply here
    return f"{type(e).__name__}{': ' + first if first else ''}: the file is truncated or not a checkpoint"
