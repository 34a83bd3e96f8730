"""The webhook functions' one Metrics (flushed by the processor's handler): every module here counts into it."""

from __future__ import annotations

from functions.shared.observability import service_metrics

metrics = service_metrics()
