"""Data sources, preprocessing and the one reader that feeds calibrators and evaluation."""
from .preprocess import Preprocess
from .reader import BatchReader
from .sources import (
    ArraySplit,
    DataError,
    DataSource,
    FileSplit,
    Split,
    absolute_path,
    absolute_spec,
    check_spec,
    expand_path,
    open_source,
    read_idx,
    write_idx,
)

__all__ = ["ArraySplit", "BatchReader", "DataError", "DataSource", "FileSplit", "Preprocess", "Split", "absolute_path",
           "absolute_spec", "check_spec", "expand_path", "open_source", "read_idx", "write_idx"]
