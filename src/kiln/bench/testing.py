"""A test double for the ``Target`` seam: answers on the event loop after a fixed delay,
echoing its inputs, and fails on a schedule. It lets the load generator's accounting be
checked against numbers known in advance.

    target = EchoTarget(delay_s=0.002, fail_every=10, error=Unavailable("busy"))
"""

from __future__ import annotations

import asyncio

from kiln.errors import KilnError
from kiln.tensors import DataType, Signature, TensorDict, TensorSpec


class EchoTarget:
    """Echoes ``x`` (FP32 ``[-1, 4]``) as ``y`` after ``delay_s``; every ``fail_every``-th
    call raises ``error`` instead."""

    protocol = "echo"
    address = "memory"
    size_bytes = None

    def __init__(self, *, delay_s: float = 0.0, fail_every: int = 0,
                 error: KilnError | None = None, label: str = "echo") -> None:
        self.label = label
        self.delay_s, self.fail_every, self.error = delay_s, fail_every, error
        self.calls = 0
        self.in_flight = self.most_in_flight = 0

    async def open(self) -> Signature:
        return Signature(inputs=(TensorSpec("x", DataType.FP32, (-1, 4)),),
                         outputs=(TensorSpec("y", DataType.FP32, (-1, 4)),))

    def encode(self, inputs: TensorDict) -> TensorDict:
        return inputs

    async def call(self, request: TensorDict) -> TensorDict:
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail_every and self.calls % self.fail_every == 0 and self.error:
                raise self.error
            return request
        finally:
            self.in_flight -= 1

    def decode(self, reply: TensorDict) -> TensorDict:
        return {"y": reply["x"]}

    async def close(self) -> None:
        pass
