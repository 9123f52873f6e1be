"""What a C-STORE status code means, and what we do about it."""
from __future__ import annotations

import enum
from typing import Optional

# Vendor codes that look like "out of resources" (0xA7xx) but are permanent rejections in
# dcm4chee-arc: retrying them only wastes time.
_PERMANENT_A7 = {
    0xA770: "the destination rejected the object (dcm4chee: storage rule / duplicate rejected)",
    0xA771: "the destination rejected the object (dcm4chee: patient or study mismatch)",
    0xA777: "the destination rejected the object (dcm4chee: rejected by policy)",
}

_MEANINGS = {
    0x0000: "stored",
    0xB000: "stored, but the destination changed some values to fit its rules (coercion)",
    0xB006: "stored, but the destination discarded some elements",
    0xB007: "stored, but the object does not fully match its SOP class",
    0x0117: "refused: invalid SOP Instance UID",
    0x0122: "refused: the destination does not support this SOP class",
    0x0124: "refused: our AE title is not authorised to store on the destination",
    0x0210: "refused: duplicate message ID (network software problem)",
    0x0211: "refused: unrecognised operation",
    0x0212: "refused: mistyped argument",
    0x0213: "refused: resource limitation",
}


class StatusKind(enum.Enum):
    SUCCESS = "success"
    WARNING = "warning"
    RETRY = "retry"      # out of resources: try again after a pause
    FAILURE = "failure"  # permanent: do not retry


def classify(status: int) -> StatusKind:
    if status == 0x0000:
        return StatusKind.SUCCESS
    if status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return StatusKind.WARNING
    if 0xA700 <= status <= 0xA7FF and status not in _PERMANENT_A7:
        return StatusKind.RETRY
    if status == 0x0213:
        return StatusKind.RETRY
    return StatusKind.FAILURE


def describe(status: Optional[int]) -> str:
    """A sentence for the audit: the code and what it means."""
    if status is None:
        return "no response from the destination"
    if status in _MEANINGS:
        meaning = _MEANINGS[status]
    elif status in _PERMANENT_A7:
        meaning = _PERMANENT_A7[status]
    elif 0xA700 <= status <= 0xA7FF:
        meaning = "refused: the destination is out of resources (disk full or too busy)"
    elif 0xA900 <= status <= 0xA9FF:
        meaning = "refused: the data set does not match the SOP class (the destination " \
                  "considers the object invalid)"
    elif 0xC000 <= status <= 0xCFFF:
        meaning = "refused: the destination cannot understand or process the object"
    elif 0xB000 <= status <= 0xBFFF:
        meaning = "stored with a warning"
    else:
        meaning = "unknown status"
    return "status 0x%04X: %s" % (status, meaning)
