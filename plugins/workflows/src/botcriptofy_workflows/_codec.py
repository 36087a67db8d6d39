"""Approval requests as plain data, the shape they take in workflow histories."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from botcriptofy import ApprovalRequest

_TIMES = ("expires_at", "created_at", "decided_at")


def approval_to_data(approval: ApprovalRequest) -> dict[str, Any]:
    data = asdict(approval)
    data["payload"] = dict(approval.payload)
    for key in _TIMES:
        value = data[key]
        data[key] = value.isoformat() if isinstance(value, datetime) else value
    return data


def approval_from_data(data: dict[str, Any]) -> ApprovalRequest:
    values: dict[str, Any] = {key: data[key] for key in ApprovalRequest.__dataclass_fields__ if key in data}
    for key in _TIMES:
        if isinstance(values.get(key), str):
            values[key] = datetime.fromisoformat(values[key])
    values["payload"] = dict(values.get("payload") or {})
    return ApprovalRequest(**values)


def with_status(approval: ApprovalRequest, **changes: Any) -> ApprovalRequest:
    return replace(approval, **changes)
