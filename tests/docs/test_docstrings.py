"""Every public name documents itself: docstrings, knobs with their defaults, and what
``help()`` shows."""

from __future__ import annotations

import inspect
import pydoc
import re
import subprocess
import sys
from types import ModuleType
from typing import Any

import attrs
import pytest

import actors
import protocol
import protocol.simulator
from actors import (
    ManagedBacktestSession,
)
from protocol import (
    ContinueParams,
    CreateSession,
    ReconnectPolicy,
    Timing,
)
from protocol.simulator import LocalSimulator, ServerLimits, ServerLiveness
from protocol.simulator.faults import TARGETS

PACKAGES = (actors, protocol, protocol.simulator)


def _own_doc(obj: Any) -> str:
    return (vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__) or ""


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_every_public_name_has_a_docstring(package: ModuleType) -> None:
    """``import actors, protocol, protocol.simulator; help(name)`` shows a docstring for
    every name in ``__all__`` and for the public methods and properties of each class.
    Constants and type aliases cannot carry one: the package docstring describes them."""
    missing = []
    for name in package.__all__:
        obj = getattr(package, name)
        if inspect.isclass(obj):
            if not _own_doc(obj).strip():
                missing.append(name)
            for attr, value in vars(obj).items():
                if attr.startswith("_"):
                    continue
                func = value.fget if isinstance(value, property) else getattr(
                    value, "__func__", value)
                if (callable(func) or isinstance(value, property)) and not (
                        getattr(func, "__doc__", None) or "").strip():
                    missing.append(f"{name}.{attr}")
            assert _own_doc(obj).strip().split("\n")[0] in pydoc.render_doc(obj), name
        elif inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                missing.append(name)
        elif not re.search(rf"``{name}``[^\n]*\S", package.__doc__ or ""):
            missing.append(name)
    assert missing == []


def _default_text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | float):
        return f"{value:g}" if not isinstance(value, int) else str(value)
    if isinstance(value, str):
        return repr(value).replace("'", '"')
    if value == () or value == {}:
        return repr(value)
    raise AssertionError(f"no text for default {value!r}")


@pytest.mark.parametrize("cls", [Timing, ReconnectPolicy, CreateSession, ContinueParams,
                                 ServerLiveness, ServerLimits])
def test_every_knob_is_documented_with_its_default(cls: type) -> None:
    doc = _own_doc(cls)
    for field in attrs.fields(cls):
        if field.name in ("start_slot", "end_slot"):
            assert field.name in doc
            continue
        default = field.default.factory() if isinstance(
            field.default, attrs.Factory) else field.default  # type: ignore[call-arg]
        assert f"``{field.name}={_default_text(default)}``" in doc or (
            f"``{field.name}={_default_text(default)}``" in " ".join(doc.split())), (
            cls.__name__, field.name)


def test_start_documents_every_keyword_with_its_default() -> None:
    doc = " ".join((ManagedBacktestSession.start.__doc__ or "").split())
    for name, param in inspect.signature(ManagedBacktestSession.start).parameters.items():
        if param.kind is inspect.Parameter.KEYWORD_ONLY:
            assert f"``{name}={_default_text(param.default)}``" in doc, name
        elif name != "cls":
            assert f"``{name}``" in doc, name


def test_help_of_local_simulator_shows_faults_targets_and_every_argument() -> None:
    text = pydoc.render_doc(LocalSimulator)
    assert "faults" in text and "timing" in text and "policy" in text
    for target in TARGETS:
        assert f'"{target}"' in text
    doc = _own_doc(LocalSimulator)
    for name in inspect.signature(LocalSimulator.__init__).parameters:
        if name != "self":
            assert f"``{name}``" in doc, name


def test_the_python_help_command_shows_the_docstrings() -> None:
    """What a user runs: ``python -c "import actors, protocol, protocol.simulator;
    help(...)"``, one name of each package."""
    code = ("import actors, protocol, protocol.simulator; help(actors.SessionStats); "
            "help(protocol.Timing); help(protocol.simulator.LocalSimulator)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30, env={"PAGER": "cat", "TERM": "dumb"})
    assert result.returncode == 0, result.stderr
    for line in ("Counters of one session", "keepalive_deadline=45",
                 "A backtest server on ``host:port``"):
        assert line in result.stdout
