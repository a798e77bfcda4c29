"""The process that runs one submission's code (inside the sandbox): ``python -m minigpt.assignments.worker R W``.

It never decides a grade. It runs cells (the student's, the instructor's context cells and the
reference solutions) in an IPython shell, and on request calls one of the submission's functions
on arguments sent by the grader, sending back what it returned. The grader reads requests it
wrote itself, and reads replies as untrusted data: JSON, with values as ``torch.save`` bytes that
it loads with ``weights_only=True`` (tensors, numbers, strings, lists, tuples, dicts, sets only).

Frames on both pipes are a 4-byte big-endian length and a payload: requests are pickles (the
grader is trusted here), replies are UTF-8 JSON.
"""

from __future__ import annotations

import base64
import io
import os
import pickle
import struct
import sys

OPAQUE = "__minigpt_opaque__"
_MAX_DEPTH = 8


def read_frame(fd: int) -> bytes | None:
    head = _read_exact(fd, 4)
    if head is None:
        return None
    return _read_exact(fd, struct.unpack(">I", head)[0])


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        b = os.read(fd, min(n - got, 1 << 20))
        if not b:
            return None
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def write_frame(fd: int, payload: bytes) -> None:
    data = struct.pack(">I", len(payload)) + payload
    while data:
        data = data[os.write(fd, data):]


def plain(value, depth: int = 0):
    """``value`` as data that ``torch.load(weights_only=True)`` accepts; anything else becomes
    ``{OPAQUE: type name}`` (so the grader can say "got a GPT" without unpickling one)."""
    import torch

    if depth > _MAX_DEPTH:
        return {OPAQUE: "nested too deep"}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.layout != torch.strided:
            t = t.to_dense()
        return t.clone()
    if type(value).__module__ == "numpy":
        try:
            return torch.as_tensor(value) if hasattr(value, "shape") and value.shape else value.item()
        except Exception:  # noqa: BLE001
            return {OPAQUE: type(value).__name__}
    if isinstance(value, (list, tuple)):
        items = [plain(v, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, (set, frozenset)):
        return {plain(v, depth + 1) for v in value if isinstance(v, (int, float, str, tuple))}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            k = plain(k, depth + 1)
            if isinstance(k, (dict, list, torch.Tensor, set)):
                return {OPAQUE: type(value).__name__}
            out[k] = plain(v, depth + 1)
        return out
    return {OPAQUE: type(value).__name__}


def encode(value) -> str:
    import torch

    buf = io.BytesIO()
    torch.save(plain(value), buf)
    return base64.b64encode(buf.getvalue()).decode()


def _state(args) -> dict:
    """What a call changed in place: the weights and gradients of modules and the state of
    optimizers passed as arguments (a training step's answer is what it did to them)."""
    import torch

    out = {}
    for i, a in enumerate(args):
        if isinstance(a, torch.nn.Module):
            out[str(i)] = {"state": {k: v.detach().clone() for k, v in a.state_dict().items()},
                           "grads": {n: p.grad.detach().clone() for n, p in a.named_parameters() if p.grad is not None}}
        elif isinstance(a, torch.optim.Optimizer):
            out[str(i)] = {"optimizer": a.state_dict()}
    return out


def resolve(name: str):
    """The object a dotted name (``minigpt.attention.attention``) stands for."""
    import importlib

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
            break
        except ImportError:
            continue
    else:
        raise ImportError(name)
    for a in parts[i:]:
        obj = getattr(obj, a)
    return obj


class _Watch:
    """Which forbidden functions a call reaches (a profile hook on this thread and new ones)."""

    def __init__(self, names):
        import threading

        self.codes, self.builtins, self.hits = {}, {}, []
        for n in names:
            try:
                obj = resolve(n)
            except (ImportError, AttributeError):
                continue
            code = getattr(obj, "__code__", None)
            if code is not None:
                self.codes[code] = n
            else:
                self.builtins[id(obj)] = n
        self._threading = threading

    def _hook(self, frame, event, arg):
        if event == "call":
            n = self.codes.get(frame.f_code)
        elif event == "c_call":
            n = self.builtins.get(id(arg))
        else:
            return
        if n and n not in self.hits:
            self.hits.append(n)

    def __enter__(self):
        if self.codes or self.builtins:
            sys.setprofile(self._hook)
            self._threading.setprofile(self._hook)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)
        self._threading.setprofile(None)


def _error(e: BaseException) -> dict:
    return {"ok": False, "ename": type(e).__name__, "evalue": str(e)[:2000]}


def serve(rfd: int, wfd: int) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    ns = shell.user_ns
    write_frame(wfd, b'{"ok": true, "ready": true}')
    while True:
        frame = read_frame(rfd)
        if frame is None:
            return
        req = pickle.loads(frame)
        try:
            reply = _handle(shell, ns, req)
        except BaseException as e:  # noqa: BLE001 - report it and carry on
            reply = _error(e)
        import json

        write_frame(wfd, json.dumps(reply).encode())


def _handle(shell, ns, req: dict) -> dict:
    op = req["op"]
    if op == "run":
        res = shell.run_cell(req["code"], store_history=True)
        err = res.error_before_exec or res.error_in_exec
        return {"ok": True} if err is None else _error(err)
    if op == "kind":  # what an expression of the hidden tests is: a function to call, or a value
        try:
            value = eval(req["expr"], ns)  # noqa: S307 - the expression is the instructor's
        except BaseException as e:  # noqa: BLE001
            return _error(e)
        if callable(value) and not hasattr(value, "shape"):
            return {"ok": True, "callable": True}
        return {"ok": True, "callable": False, "value": encode(value)}
    if op == "call":
        fn = eval(req["expr"], ns)  # noqa: S307
        args, grads = pickle.loads(req["args"])
        for i, named in grads.items():
            params = dict(args[i].named_parameters())
            for n, g in named.items():
                params[n].grad = g
        watch = _Watch(req.get("forbid", ()))
        try:
            with watch:
                out = fn(*args)
        except BaseException as e:  # noqa: BLE001 - the student's exception is their answer
            return {**_error(e), "raised": True, "forbidden": watch.hits}
        return {"ok": True, "value": encode(out), "state": encode(_state(args)), "forbidden": watch.hits}
    raise ValueError(f"unknown request {op!r}")


def main() -> None:
    rfd, wfd = int(sys.argv[1]), int(sys.argv[2])
    os.set_inheritable(rfd, False)
    os.set_inheritable(wfd, False)
    if len(sys.argv) > 3:  # started as root inside the sandbox: become nobody before any student code
        uid = int(sys.argv[3])
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    serve(rfd, wfd)


if __name__ == "__main__":
    main()
