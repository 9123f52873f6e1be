"""Validated settings shared by every command: where to send and how."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import ConfigError

DEFAULT_CALLING_AET = "PACSMIGRATOR"


def check_ae_title(value: str) -> Optional[str]:
    """Return why ``value`` is not a usable AE title, or None when it is fine."""
    text = value.strip()
    if not text:
        return "The AE title is empty."
    if len(text) > 16:
        return "An AE title has at most 16 characters (this one has %d)." % len(text)
    if "\\" in text:
        return "An AE title cannot contain a backslash."
    if any(ord(ch) < 32 or ord(ch) > 126 for ch in text):
        return "An AE title may only use plain letters, digits, spaces and punctuation."
    return None


def check_port(value: int) -> Optional[str]:
    if not 1 <= int(value) <= 65535:
        return "The port must be a number from 1 to 65535."
    return None


@dataclass(frozen=True)
class Destination:
    """The peer we talk to: host, port and the AE title it answers to (called AE)."""

    host: str
    port: int
    called_aet: str

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise ConfigError("The destination host is empty.")
        for problem in (check_port(self.port), check_ae_title(self.called_aet)):
            if problem:
                raise ConfigError(problem)

    @property
    def key(self) -> str:
        """Identity of the destination in the manifest: a resend to another PACS is a new job."""
        return "%s@%s:%d" % (self.called_aet.strip(), self.host.strip().lower(), self.port)

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class Settings:
    """How we behave on the network."""

    calling_aet: str = DEFAULT_CALLING_AET
    batch_size: int = 100
    retries: int = 2
    max_pdu: int = 0  # our receive limit; 0 = unlimited
    acse_timeout: float = 30.0
    dimse_timeout: float = 120.0
    network_timeout: float = 60.0
    connect_timeout: float = 10.0
    decompress: bool = True
    backoff_base_s: float = 2.0

    def __post_init__(self) -> None:
        problem = check_ae_title(self.calling_aet)
        if problem:
            raise ConfigError("Calling AE title: " + problem)
        if not 1 <= self.batch_size <= 500:
            raise ConfigError("The batch size must be between 1 and 500 files per association.")
        if not 0 <= self.retries <= 10:
            raise ConfigError("Retries must be between 0 and 10.")
        if self.max_pdu != 0 and not 4096 <= self.max_pdu <= 2 ** 32 - 1:
            raise ConfigError("The maximum PDU size must be 0 (unlimited) or at least 4096 bytes.")
