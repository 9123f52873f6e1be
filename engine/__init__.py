"""DICOM PACS Migrator engine: walk, send, record, verify. Never imports tkinter."""
import os

# pydicom loads numpy, whose OpenBLAS starts a thread pool that spins on a core for a while
# (measured: 2.5% of all CPU of a 4000-file run). The engine does no linear algebra, and on
# a small server that core belongs to the destination PACS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
