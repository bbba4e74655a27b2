"""Every audit event type the service writes has words in the web UI's strings (web/src/strings.ts),
so that no screen shows a new type as a raw code because its wording was forgotten.

The types are read from the source the way a reader finds them: the first argument of
`RequestInfo.event(...)`, the third of enrolment's `_event(...)`, `AuditEvent(type=...)`, a
factor's `audit_events=(...)` and a refusal's `event=...` (literals, module constants, or
either side of a conditional).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
SOURCE = ROOT / "src" / "cloudmfa"
STRINGS = ROOT / "web" / "src" / "strings.ts"


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level `NAME = "text"` assignments."""
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    found[target.id] = node.value.value
    return found


def _texts(node: ast.expr, constants: dict[str, str]) -> list[str]:
    """The strings an argument can be: a literal, a module constant, or either side of
    `"a" if locked else "b"`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Name) and node.id in constants:
        return [constants[node.id]]
    if isinstance(node, ast.IfExp):
        return _texts(node.body, constants) + _texts(node.orelse, constants)
    if isinstance(node, ast.Tuple):
        return [text for element in node.elts for text in _texts(element, constants)]
    return []


def _types_in_call(call: ast.Call, constants: dict[str, str]) -> list[str]:
    func = call.func
    found: list[str] = []
    if isinstance(func, ast.Attribute) and func.attr == "event" and call.args:
        found += _texts(call.args[0], constants)
    if isinstance(func, ast.Name) and func.id == "_event" and len(call.args) >= 3:
        found += _texts(call.args[2], constants)
    for keyword in call.keywords:
        if keyword.arg == "type" and isinstance(func, ast.Name) and func.id == "AuditEvent":
            found += _texts(keyword.value, constants)
        if keyword.arg in ("event", "audit_events"):
            found += _texts(keyword.value, constants)
    return found


def written_event_types() -> set[str]:
    types: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        constants = _constants(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                types.update(_types_in_call(node, constants))
    return types


def worded_event_types() -> set[str]:
    text = STRINGS.read_text()
    block = re.search(r"\beventTypes: \{(.*?)\n  \}", text, re.DOTALL)
    assert block, "strings.ts has no eventTypes"
    return set(re.findall(r'^\s*"([a-z_.]+)":', block[1], re.MULTILINE))


def test_the_scan_finds_the_event_types_of_the_contract() -> None:
    # Not vacuous: the types API.md lists (a few of them) and the indirect ones are found.
    found = written_event_types()
    for known in ("login.succeeded", "mfa.challenge_sent", "recovery_code.used", "rate_limited"):
        assert known in found
    assert "delivery.failed" in found  # AuditEvent(type=...)
    assert "factor.enrolled" in found  # enrolment's _event(...)
    assert "webauthn.clone_detected" in found  # event=CLONE_DETECTED
    assert {"account.locked", "account.unlocked"} <= found  # "…" if locked else "…"


def test_every_event_type_written_has_words_in_the_ui() -> None:
    missing = written_event_types() - worded_event_types()
    assert not missing, f"no wording in web/src/strings.ts eventTypes for {sorted(missing)}"
