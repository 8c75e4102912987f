"""The OTLP receiver behind ``ctxdoctor listen``: real exporters in, an OTLP/JSON-lines dump out."""

from ctxdoctor.receiver.grpc_server import PortInUse
from ctxdoctor.receiver.ingest import ReceiverStats
from ctxdoctor.receiver.receiver import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ConverterFailed,
    Receiver,
    journal_path,
    receipts_path,
)
from ctxdoctor.receiver.sink import DumpWriteError, Receipt, read_receipts

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "ConverterFailed",
    "DumpWriteError",
    "PortInUse",
    "Receipt",
    "Receiver",
    "ReceiverStats",
    "journal_path",
    "read_receipts",
    "receipts_path",
]
