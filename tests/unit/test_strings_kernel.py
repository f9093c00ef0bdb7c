"""take_strings against a plain Python reference."""
import numpy as np
import pytest

from otelproc.batch import StringArray
from otelproc.kernels.strings import take_strings


@pytest.mark.parametrize("seed", range(5))
def test_take_matches_python(seed):
    rng = np.random.default_rng(seed)
    words = ["", "a", "ünïcødé", "x" * 1000] + [rng.bytes(int(rng.integers(0, 50))).hex() for _ in range(200)]
    s = StringArray.from_pylist(words)
    idx = rng.integers(0, len(words), size=500)
    buf, off = take_strings(s.buf, s.off, idx)
    assert StringArray(buf, off).to_pylist() == [words[i] for i in idx]


def test_empty_and_errors():
    s = StringArray.from_pylist(["ab", "c"])
    buf, off = take_strings(s.buf, s.off, np.zeros(0, np.int64))
    assert len(buf) == 0 and off.tolist() == [0]
    with pytest.raises(IndexError):
        take_strings(s.buf, s.off, np.array([2]))
    with pytest.raises(TypeError):
        take_strings(s.buf.astype(np.int8), s.off, np.array([0]))
