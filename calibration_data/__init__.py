"""Data sources, preprocessing and the one reader that feeds calibrators and evaluation."""
from .preprocess import Preprocess
from .reader import BatchReader
from .sources import DataError, DataSource, Split, open_source, read_idx, write_idx

__all__ = ["BatchReader", "DataError", "DataSource", "Preprocess", "Split", "open_source", "read_idx", "write_idx"]
