"""The IDX file format of MNIST and Fashion-MNIST (LeCun's), read into a numpy array; gzipped files too.

    bytes 0-1: 0, 0;  byte 2: element type (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64);  byte 3: number of dimensions d;  then d big-endian uint32 sizes;  then the data, big-endian.

Torchvision reads only uncompressed files in its own folder layout; this reader serves the files where a
package or a person put them, as released (`train-images-idx3-ubyte.gz`, ...).
"""

import gzip

import numpy as np

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read(path: str) -> np.ndarray:
    """The array stored in the IDX file at `path` (gzip when the name ends in .gz), in native byte order.

    Raises:
        ValueError: the header is not IDX's or the data is shorter or longer than the header says.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise ValueError(f"{path}: not an IDX file (header {raw[:4].hex()})")
    ndim = raw[3]
    start = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_TYPES[raw[2]])
    if len(raw) - start != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"{path}: {len(raw) - start} data bytes, the header's shape {shape} needs "
                         f"{int(np.prod(shape)) * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype, offset=start).reshape(shape).astype(dtype.newbyteorder("="))
