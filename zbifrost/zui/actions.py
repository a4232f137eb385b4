"""Action kinds: what a zUI key does when dispatched (docs/protocol.md section 5).

Each kind is a small class built once at load time from the YAML value (`parse_action`) and
run per request with `run(ctx)`, which returns the result or a Deferred of it. A value of a
shape no kind accepts is refused at load time with a `ZuiError` naming the line, never at
request time: plugin functions are imported and checked, zLink targets are resolved inside
the workspace, zDialog fields are compiled, and nesting is bounded (`MAX_NESTING`).

Everything a running action needs from the server comes through `ctx` (see
`zbifrost.context.RequestContext`): the session to move, the workspace to look blocks up
in, the reactor, and `ctx.ask` for a zDialog's input round trip. Nothing here reads messages
or sockets.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from ..app_proxy_settings import url_problem
from ..messages import JSON, UNKNOWN_COMMAND, JSONValue, RequestError
from .arguments import ArgumentError, Arguments, parse_arguments, placeholders, placeholders_in_strings, substitute
from .errors import ZuiError
from .forms import parse_fields, validate
from .plugins import PluginError
from .zpath import ZPathError, plugin_target, split_zpath, zpath_to_file

if TYPE_CHECKING:
    from ..context import RequestContext
    from .forms import Field
    from .loader import ParseContext
    from .model import Action, ZuiFile
    from .plugins import PluginModule

MAX_NESTING = 8  # wizards and dialogs inside one another, at most this deep


DISPLAY_MESSAGE_EVENTS = frozenset({"text", "success", "info", "warning", "error", "header"})
DISPLAY_DATA_EVENTS = frozenset({"list", "json", "table"})


class MessageAction:
    """A plain string: the result is `{"message": <the string>}`."""

    kind = "message"
    cacheable = True
    uses_context = False
    __slots__ = ("result",)

    def __init__(self, text: str) -> None:
        self.result = {"message": text}

    def run(self, ctx: RequestContext | None) -> JSON:
        return self.result

    def introspect(self) -> JSON:
        return {}


class DisplayAction:
    """`{zDisplay: {event, ...}}`: a message with a level, or structured data to render."""

    kind = "display"
    cacheable = True
    uses_context = False
    __slots__ = ("result",)

    result: JSON

    def __init__(self, spec: Any, line: int) -> None:
        if not isinstance(spec, dict) or not isinstance(spec.get("event"), str):
            raise ZuiError(f"line {line}: zDisplay needs a mapping with a string 'event'")
        event = spec["event"]
        if event in DISPLAY_MESSAGE_EVENTS:
            if "content" not in spec:
                raise ZuiError(f"line {line}: zDisplay event {event!r} needs 'content'")
            self.result = {"message": spec["content"], "level": event}
        elif event in DISPLAY_DATA_EVENTS:
            self.result = {"display_event": event, "data": {k: v for k, v in spec.items() if k != "event"}}
        else:
            known = ", ".join(sorted(DISPLAY_MESSAGE_EVENTS | DISPLAY_DATA_EVENTS))
            raise ZuiError(f"line {line}: zDisplay event {event!r} is not one of {known}")

    def run(self, ctx: RequestContext | None) -> JSON:
        return self.result

    def introspect(self) -> JSON:
        return {}


class FunctionAction:
    """`zFunc(@.plugins.mod.fn, 1, "a")`, `&mod.fn(1, "a")` or `{zFunc: ..., args: [...]}`:
    the result is what `fn` returns (it runs as `PluginFunction.call` says)."""

    kind = "function"
    uses_context = True
    cacheable = True
    __slots__ = ("function_name", "arg_count", "args", "module")

    module: PluginModule

    def __init__(self, target: object, args: list[Arguments], line: int, context: ParseContext) -> None:
        try:
            segments, self.function_name = plugin_target(target)
        except ZPathError as err:
            raise ZuiError(f"line {line}: {err}") from None
        for placeholder in placeholders(args):
            if context.form_fields is None:
                raise ZuiError(f"line {line}: {placeholder!r} is only defined inside a zDialog's onSubmit")
            if placeholder.field is not None and placeholder.field not in context.form_fields:
                raise ZuiError(f"line {line}: {placeholder!r}: the zDialog has no field {placeholder.field!r}")
        self.args = args
        self.arg_count = len(args)
        try:
            self.module = context.plugins.use(segments, self.function_name, self.arg_count)
        except PluginError as err:
            raise ZuiError(f"line {line}: {target}: {err}") from None
        context.plugin_calls.append(self)

    def run(self, ctx: RequestContext) -> Deferred[JSONValue]:
        args = substitute(self.args, ctx.zConv)  # a fresh copy: a plugin may mutate its arguments
        return self.module.functions[self.function_name].call(args, ctx)

    def introspect(self) -> JSON:
        return {}


class HttpAction:
    """`{zHTTP: "http://..."}` or `{zHTTP: {url, timeout}}`: the application answers the command
    (zbifrost.app_proxy, docs/protocol.md section 13); no worker thread."""

    kind = "http"
    uses_context = True
    cacheable = True
    __slots__ = ("url", "timeout", "application")

    def __init__(self, spec: Any, line: int, context: ParseContext) -> None:
        if context.application is None:
            raise ZuiError(f"line {line}: zHTTP needs a proxy: section with a secret_file in the config file "
                           "(docs/protocol.md section 13)")
        self.application = context.application
        self.timeout: float | None = None  # seconds; None: the command's timeout, else the proxy section's
        url = spec
        if isinstance(spec, dict):
            only_keys(spec, {"url", "timeout"}, line)
            url = spec.get("url")
            if "timeout" in spec:
                timeout = spec["timeout"]
                if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
                    raise ZuiError(f"line {line}: zHTTP timeout must be a number greater than zero")
                self.timeout = float(timeout)
        problem = url_problem(url)
        if problem is not None:
            raise ZuiError(f"line {line}: zHTTP url: {problem}")
        self.url: str = url

    def run(self, ctx: RequestContext) -> Deferred[JSONValue]:
        facts = {"zKey": ctx.command.key, "zBlock": ctx.zblock, "args": ctx.args,
                 "data": ctx.zConv if ctx.zConv is not None else ctx.data, "user": ctx.user, "role": ctx.role,
                 "client_id": ctx.client_id}
        return self.application.command(self.url, facts, self.timeout or ctx.command.timeout)

    def introspect(self) -> JSON:
        return {}


def _block_view(zvafile: str, zfile: ZuiFile, name: str, role: str) -> JSON:
    """The result of zLink and zBack: the block the client is in and its menu for its role."""
    block = zfile.blocks.get(name)
    if block is None:
        raise RequestError(UNKNOWN_COMMAND, f"Unknown block: {name} is no longer in {zvafile}")
    return {"zBlock": name, "menu": block.visible_menu(role), "zVaFile": zvafile}


class LinkAction:
    """`zLink(Block)` / `zLink(@.zUI.file.Block)` / `zLink(@.zUI.file)`: moves this client."""

    kind = "link"
    uses_context = True
    cacheable = False
    __slots__ = ("zvafile", "zblock")

    zvafile: str
    zblock: str | None  # None: that file's default block

    def __init__(self, target: object, line: int, context: ParseContext) -> None:
        if not isinstance(target, str) or not target:
            raise ZuiError(f"line {line}: a zLink target must be a block name or a zPath")
        if not target.startswith("@"):
            if target not in context.block_names:
                raise ZuiError(f"line {line}: zLink target {target!r} is not a block of this file")
            self.zvafile, self.zblock = context.zpath, target
            return
        try:
            folders, name, rest = split_zpath(target)
            if len(rest) > 1:
                raise ZPathError(f"zPath {target!r}: expected @.zUI.<file>.<block>")
            self.zvafile = "@." + ".".join([*folders, "zUI", name])
            zpath_to_file(context.workspace, self.zvafile)
        except ZPathError as err:
            raise ZuiError(f"line {line}: zLink target refused: {err}") from None
        self.zblock = rest[0] if rest else None  # None: that file's default block
        try:
            blocks = context.blocks_of(self.zvafile)  # None while that file is itself being loaded
        except (ZuiError, ZPathError) as err:
            raise ZuiError(f"line {line}: zLink target {target!r} does not load: {err}") from None
        if blocks is not None and self.zblock is not None and self.zblock not in blocks:
            raise ZuiError(f"line {line}: zLink target {target!r}: {self.zvafile} has no block {self.zblock!r}")

    def run(self, ctx: RequestContext) -> JSON:
        zfile = ctx.workspace.file(self.zvafile)
        name = self.zblock or zfile.default_block()
        view = _block_view(self.zvafile, zfile, name, ctx.role)
        ctx.session.move_to(self.zvafile, name)
        return view

    def introspect(self) -> JSON:
        return {"target": {"zVaFile": self.zvafile, "zBlock": self.zblock}}


class BackAction:
    """`zBack`: returns this client to the block it came from (it stays at its first block)."""

    kind = "back"
    uses_context = True
    cacheable = False
    __slots__ = ()

    def run(self, ctx: RequestContext) -> JSON:
        zvafile, name = ctx.session.back()
        return _block_view(zvafile, ctx.workspace.file(zvafile), name, ctx.role)

    def introspect(self) -> JSON:
        return {}


class WizardAction:
    """`{zWizard: {step: <action>, ...}}`: the steps in order, each seeing the earlier results
    as `ctx.zHat`; the result is the list of step results."""

    kind = "wizard"
    uses_context = True
    __slots__ = ("steps", "cacheable")

    def __init__(self, spec: Any, line: int, context: ParseContext) -> None:
        if not isinstance(spec, dict) or not spec:
            raise ZuiError(f"line {line}: zWizard needs a mapping of step names to actions")
        inner = context.nested()
        lines = getattr(spec, "lines", {})
        self.steps: tuple[tuple[str, Action], ...] = tuple(
            (str(name), parse_action(value, lines.get(name, line), inner)) for name, value in spec.items())
        self.cacheable = all(step.cacheable for _, step in self.steps)

    def run(self, ctx: RequestContext) -> list[JSONValue] | Deferred[list[JSONValue]]:
        return self._run_from(0, [], ctx)

    def _run_from(self, index: int, results: list[JSONValue], ctx: RequestContext
                  ) -> list[JSONValue] | Deferred[list[JSONValue]]:
        while index < len(self.steps):
            result = self.steps[index][1].run(ctx.derive(zHat=list(results)))
            index += 1
            if isinstance(result, Deferred):
                return result.addCallback(self._step_done, index, results, ctx)
            results.append(result)
        return results

    def _step_done(self, result: JSONValue, index: int, results: list[JSONValue], ctx: RequestContext
                   ) -> list[JSONValue] | Deferred[list[JSONValue]]:
        results.append(result)
        return self._run_from(index, results, ctx)

    def introspect(self) -> JSON:
        return {"steps": [name for name, _ in self.steps]}


class DialogAction:
    """`{zDialog: {fields: [...], onSubmit: <action>, prompt: "..."}}`: validates the form
    (from the request's `data`, or asked for with `input_request`), then runs onSubmit with
    the form as `zConv`."""

    kind = "dialog"
    uses_context = True
    cacheable = False
    __slots__ = ("fields", "prompt", "on_submit")

    fields: tuple[Field, ...]
    prompt: str | None
    on_submit: Action

    def __init__(self, spec: Any, line: int, context: ParseContext) -> None:
        if not isinstance(spec, dict):
            raise ZuiError(f"line {line}: zDialog needs a mapping with fields and onSubmit")
        only_keys(spec, {"fields", "onSubmit", "prompt"}, line)
        lines = getattr(spec, "lines", {})
        self.fields = parse_fields(spec.get("fields"), lines.get("fields", line))
        self.prompt = spec.get("prompt")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise ZuiError(f"line {line}: zDialog prompt must be a string")
        if "onSubmit" not in spec:
            raise ZuiError(f"line {line}: zDialog needs onSubmit")
        names = frozenset(field.name for field in self.fields)
        self.on_submit = parse_action(spec["onSubmit"], lines.get("onSubmit", line), context.nested(form_fields=names))

    def run(self, ctx: RequestContext) -> JSONValue | Deferred[JSONValue]:
        if ctx.data is not None:
            return self._submit(ctx.data, ctx)
        prompt = self.prompt or ctx.command.description or ctx.command.key.lstrip("^")
        asked = ctx.ask(prompt, [field.describe() for field in self.fields])
        return asked.addCallback(self._submit, ctx)

    def _submit(self, values: JSONValue, ctx: RequestContext) -> JSONValue | Deferred[JSONValue]:
        form = validate(self.fields, values)
        return self.on_submit.run(ctx.derive(zConv=form))

    def introspect(self) -> JSON:
        info: JSON = {"fields": [field.introspect() for field in self.fields]}
        if self.prompt is not None:
            info["prompt"] = self.prompt
        return info


def only_keys(mapping: dict[Any, Any], allowed: set[str], line: int) -> None:
    """Refuse keys a dict action does not know (a typo must not pass silently)."""
    extra = sorted(str(key) for key in mapping if key not in allowed)
    if extra:
        raise ZuiError(f"line {line}: unknown key(s) {', '.join(extra)} beside {'/'.join(sorted(allowed))}")


def _arguments(text: str, line: int) -> list[Arguments]:
    try:
        return parse_arguments(text)
    except ArgumentError as err:
        raise ZuiError(f"line {line}: {err}") from None


_ZFUNC_CALL = re.compile(r"zFunc\(\s*(@[^,()\s]*)\s*(?:,(.*))?\)\s*", re.S)
_SHORT_CALL = re.compile(r"&([A-Za-z_][A-Za-z0-9_.]*)(?:\((.*)\))?\s*", re.S)
_ZLINK_CALL = re.compile(r"zLink\(\s*([^()]*?)\s*\)\s*", re.S)


def _zfunc_string(text: str, line: int, context: ParseContext) -> FunctionAction:
    match = _ZFUNC_CALL.fullmatch(text)
    if match is None:
        raise ZuiError(f"line {line}: expected zFunc(@.plugins.<module>.<function>, <arguments>), got {text!r}")
    return FunctionAction(match[1], _arguments(match[2] or "", line), line, context)


def _short_function_string(text: str, line: int, context: ParseContext) -> FunctionAction:
    match = _SHORT_CALL.fullmatch(text)
    if match is None:
        raise ZuiError(f"line {line}: expected &<module>.<function>(<arguments>), got {text!r}")
    return FunctionAction("@.plugins." + match[1], _arguments(match[2] or "", line), line, context)


def _zlink_string(text: str, line: int, context: ParseContext) -> LinkAction:
    match = _ZLINK_CALL.fullmatch(text)
    if match is None:
        raise ZuiError(f"line {line}: expected zLink(<block>) or zLink(@.zUI.<file>.<block>), got {text!r}")
    return LinkAction(match[1], line, context)


def _back_string(text: str, line: int, context: ParseContext) -> BackAction:
    return BackAction()


def _display(mapping: dict[Any, Any], line: int, context: ParseContext) -> DisplayAction:
    only_keys(mapping, {"zDisplay"}, line)
    return DisplayAction(mapping["zDisplay"], line)


def _zfunc_mapping(mapping: dict[Any, Any], line: int, context: ParseContext) -> FunctionAction:
    only_keys(mapping, {"zFunc", "args"}, line)
    args = mapping.get("args", [])
    if not isinstance(args, list):
        raise ZuiError(f"line {line}: zFunc args must be a list")
    return FunctionAction(mapping["zFunc"], placeholders_in_strings(args), line, context)


def _zlink_mapping(mapping: dict[Any, Any], line: int, context: ParseContext) -> LinkAction:
    only_keys(mapping, {"zLink"}, line)
    return LinkAction(mapping["zLink"], line, context)


def _http(mapping: dict[Any, Any], line: int, context: ParseContext) -> HttpAction:
    only_keys(mapping, {"zHTTP"}, line)
    return HttpAction(mapping["zHTTP"], line, context)


def _wizard(mapping: dict[Any, Any], line: int, context: ParseContext) -> WizardAction:
    only_keys(mapping, {"zWizard"}, line)
    return WizardAction(mapping["zWizard"], line, context)


def _dialog(mapping: dict[Any, Any], line: int, context: ParseContext) -> DialogAction:
    only_keys(mapping, {"zDialog"}, line)
    return DialogAction(mapping["zDialog"], line, context)


# Dict actions: the key naming the kind -> a constructor taking (the mapping without its
# options, line, parse_context).
DICT_KINDS: dict[str, Callable[[dict[Any, Any], int, ParseContext], Action]] = {
    "zDisplay": _display,
    "zFunc": _zfunc_mapping,
    "zLink": _zlink_mapping,
    "zWizard": _wizard,
    "zDialog": _dialog,
    "zHTTP": _http,
}

# String actions: a pattern matching the start of the text -> a constructor taking (text,
# line, parse_context). A string no pattern matches is a plain message.
STRING_KINDS: dict[re.Pattern[str], Callable[[str, int, ParseContext], Action]] = {
    re.compile(r"zFunc\("): _zfunc_string,
    re.compile(r"&[A-Za-z_]"): _short_function_string,
    re.compile(r"zLink\("): _zlink_string,
    re.compile(r"zBack\s*$"): _back_string,
}


def parse_action(value: Any, line: int, context: ParseContext) -> Action:
    """Build the action for a YAML value (the value without its options)."""
    if context.depth > MAX_NESTING:
        raise ZuiError(f"line {line}: wizards and dialogs are nested more than {MAX_NESTING} deep")
    if isinstance(value, str):
        for pattern, build in STRING_KINDS.items():
            if pattern.match(value):
                return build(value, line, context)
        return MessageAction(value)
    if isinstance(value, dict):
        kinds = [key for key in value if key in DICT_KINDS]
        if len(kinds) != 1:
            expected = ", ".join(sorted(DICT_KINDS))
            raise ZuiError(f"line {line}: an action mapping needs exactly one of {expected}; "
                           f"got keys {sorted(map(str, value))}")
        return DICT_KINDS[kinds[0]](value, line, context)
    raise ZuiError(f"line {line}: an action must be a string or a mapping, not {type(value).__name__}")
