"""Test doubles for the runtime seam.

``EchoSession`` returns each input under the name ``<input>_out`` and can be told to fail
or to answer with the wrong number of rows; it lets serve-core tests run without a real
runtime.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from kiln.runtime.base import ModelArtifact, SessionOptions, VersionFiles
from kiln.tensors import Signature, TensorDict, TensorSpec


class EchoSession:
    """Returns every input as ``<name>_out``; records how many rows each run saw."""

    def __init__(self, inputs: Sequence[TensorSpec], *, fail_on_negative: bool = False,
                 drop_row: bool = False, delay_s: float = 0.0) -> None:
        outputs = tuple(TensorSpec(f"{s.name}_out", s.datatype, s.shape) for s in inputs)
        self._signature = Signature(inputs=tuple(inputs), outputs=outputs)
        self.batch_sizes: list[int] = []
        #: Raise when any numeric input holds a negative value.
        self.fail_on_negative = fail_on_negative
        #: Return one row fewer than given (a broken model).
        self.drop_row = drop_row
        #: Seconds each run takes.
        self.delay_s = delay_s

    @property
    def signature(self) -> Signature:
        return self._signature

    @property
    def providers(self) -> Sequence[str]:
        return ("echo",)

    def run(self, inputs: TensorDict, output_names: Sequence[str] | None = None) -> TensorDict:
        first = next(iter(inputs.values()))
        self.batch_sizes.append(int(first.shape[0]) if first.ndim else 1)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on_negative and any(v.dtype.kind in "if" and (v < 0).any()
                                         for v in inputs.values()):
            raise RuntimeError("negative input")
        result = {f"{name}_out": (value[:-1] if self.drop_row else value).copy()
                  for name, value in inputs.items()}
        if output_names:
            result = {name: result[name] for name in output_names}
        return result

    def close(self) -> None:
        pass


class EchoBackend:
    """A backend whose sessions echo their inputs (see ``EchoSession``); a version folder
    holds a ``model.echo`` file, read (and so checked) through the repository like any model
    file. ``sessions`` lists every session it made, for tests to look into."""

    name = "echo"
    platform = "kiln_echo"
    default_filename = "model.echo"

    def __init__(self, inputs: Sequence[TensorSpec], *, fail_on_negative: bool = False,
                 delay_s: float = 0.0) -> None:
        self._inputs = tuple(inputs)
        self._fail_on_negative = fail_on_negative
        self._delay_s = delay_s
        self.sessions: list[EchoSession] = []

    def admit(self, files: VersionFiles, filename: str,
              options: SessionOptions) -> ModelArtifact:
        stored = files.read(filename)
        return ModelArtifact(path=stored.path, content=stored.data)

    def load(self, artifact: ModelArtifact, options: SessionOptions) -> EchoSession:
        session = EchoSession(self._inputs, fail_on_negative=self._fail_on_negative,
                              delay_s=self._delay_s)
        self.sessions.append(session)
        return session
