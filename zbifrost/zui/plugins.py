"""Plugin functions: the Python a zUI file may call, and only from `<workspace>/plugins/`.

`Plugins.use` imports `<workspace>/plugins/<module>.py` by file path (under a private module
name, never through `sys.path` or a dotted name), after checking that its real path is inside
the real `plugins/` folder of the workspace, and checks that the named function exists and
accepts the arguments the zUI file gives it. `Plugins.refresh` re-imports a module whose file
changed; a change that does not import, or that drops or breaks a function the loaded zUI
files call, is logged with the file and line and the last good version stays. `PluginFunction.call` runs a function
the way docs/protocol.md section 5 says: plain functions in the server's thread pool, coroutines and
Deferred-returning functions on the reactor.

Nothing here knows about zUI files, connections or requests (beyond passing `ctx` on).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from importlib.machinery import SourceFileLoader
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

from twisted.internet import defer
from twisted.logger import Logger

from .. import filestamp
from .zpath import inside

if TYPE_CHECKING:
    from ..context import RequestContext
    from .actions import FunctionAction

# (modification time, size, inode) of a plugin file: a change to any of them re-imports it
Stamp = tuple[int, int, int]

log = Logger()


class PluginError(Exception):
    """A plugin module or function that cannot be used; str() names the file and line."""


class _SourceOnlyLoader(SourceFileLoader):
    """Compiles the plugin from its source on every import: no `__pycache__` is read or
    written, so an edit is never hidden by bytecode with the same size and second."""

    def path_stats(self, path: str) -> NoReturn:
        raise OSError("plugins are always compiled from source")


def _runs_on_reactor(function: Callable[..., Any]) -> bool:
    """`async def`, `@inlineCallbacks` and functions annotated `-> Deferred` run on the reactor."""
    if inspect.iscoroutinefunction(function):
        return True
    unwrapped = inspect.unwrap(function)
    if unwrapped is not function and inspect.isgeneratorfunction(unwrapped):
        return True
    annotation = inspect.signature(function).return_annotation
    if isinstance(annotation, str):
        return annotation.split("[", 1)[0].strip().rsplit(".", 1)[-1] == "Deferred"
    return annotation is defer.Deferred or getattr(annotation, "__origin__", None) is defer.Deferred


class PluginFunction:
    """A function of a loaded plugin module and how to call it."""

    __slots__ = ("function", "name", "takes_ctx", "on_reactor")

    def __init__(self, function: Callable[..., Any], name: str) -> None:
        self.function = function
        self.name = name
        self.takes_ctx = "ctx" in inspect.signature(function).parameters
        self.on_reactor = _runs_on_reactor(function)

    def check_arguments(self, count: int) -> None:
        """Raise TypeError unless the function accepts `count` positional arguments (and ctx)."""
        inspect.signature(self.function).bind(*([None] * count), **({"ctx": None} if self.takes_ctx else {}))

    def call(self, args: list[Any], ctx: RequestContext) -> defer.Deferred[Any]:
        """A Deferred of the function's result; ctx is passed as the keyword `ctx` if it takes one."""
        kwargs = {"ctx": ctx} if self.takes_ctx else {}
        if self.on_reactor:
            return defer.maybeDeferred(self.function, *args, **kwargs)
        return ctx.run_in_thread(self._call_in_thread, args, kwargs, name=self.name)

    def _call_in_thread(self, args: list[Any], kwargs: dict[str, Any]) -> Any:
        result = self.function(*args, **kwargs)
        if isinstance(result, defer.Deferred) or inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(f"plugin function {self.name} ran in a pool thread but returned "
                            f"{type(result).__name__}: declare it `async def`, decorate it with "
                            f"inlineCallbacks or annotate it `-> Deferred` so that it runs on the reactor")
        return result


class PluginModule:
    """One plugin file: its current module and the functions in use from it."""

    def __init__(self, path: str, shown: str, module_name: str) -> None:
        self.path = path  # real path, inside <workspace>/plugins
        self.shown = shown  # path relative to the workspace, for messages
        self.module_name = module_name
        self.module: ModuleType | None = None
        self.stamp: Stamp | None = None
        self.functions: dict[str, PluginFunction] = {}  # name -> PluginFunction of the current module


def _failure_line(err: BaseException, path: str) -> int | str | None:
    if isinstance(err, SyntaxError) and err.lineno:
        return err.lineno
    lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__) if frame.filename == path]
    return lines[-1] if lines else "?"


class Plugins:
    """The plugin modules of one workspace, imported on first use and reloaded on change.

    `calls_in_use()` yields the zFunc actions of the loaded zUI files (each with `module`,
    `function_name` and `arg_count`): a new version of a module must serve all of them.
    """

    def __init__(self, workspace_root: str, calls_in_use: Callable[[], Iterable[FunctionAction]]) -> None:
        self.workspace_root = workspace_root
        self._calls_in_use = calls_in_use
        self.folder = os.path.join(workspace_root, "plugins")
        digest = hashlib.sha256(workspace_root.encode("utf-8")).hexdigest()[:12]
        self._name_prefix = f"_zbifrost_plugin_{digest}_"
        self._modules: dict[str, PluginModule] = {}  # path -> PluginModule
        self._failed: dict[str, Stamp | None] = {}  # path -> stamp of the edit that did not load (logged once)

    def use(self, segments: list[str], name: str, arg_count: int) -> PluginModule:
        """The PluginModule whose function `name` a zFunc action will call, after checking that
        the function exists and takes `arg_count` positional arguments. Raises PluginError."""
        module = self._module(segments)
        function = module.functions.get(name)
        if function is None:
            function = _function(module.module, name, module)
        try:
            function.check_arguments(arg_count)
        except TypeError as err:
            raise PluginError(f"plugin {module.shown}: {name}() cannot take {arg_count} argument(s) "
                              f"from the zUI file ({err})") from None
        module.functions[name] = function
        return module

    def _module(self, segments: list[str]) -> PluginModule:
        path = os.path.join(self.folder, *segments[:-1], segments[-1] + ".py")
        shown = os.path.relpath(path, self.workspace_root)
        if not inside(self.workspace_root, self.folder):
            raise PluginError(f"plugin {shown}: the plugins folder leaves the workspace")
        if not os.path.isfile(path):
            raise PluginError(f"plugin {shown}: no such file")
        real = os.path.realpath(path)
        if not inside(os.path.realpath(self.folder), real):
            raise PluginError(f"plugin {shown}: points outside <workspace>/plugins")
        module = self._modules.get(real)
        if module is None:
            module = PluginModule(real, shown, self._name_prefix + "__".join(segments))
            self._update(module)
            self._modules[real] = module
        else:
            try:
                self._update(module)
            except PluginError:
                pass  # refresh() logs it; the last good version serves meanwhile
        return module

    def refresh(self) -> None:
        """Re-import every plugin module whose file changed; keep the last good one on failure."""
        for module in list(self._modules.values()):
            try:
                self._update(module)
            except PluginError as err:
                stamp = filestamp.stamp_or_none(module.path)
                if self._failed.get(module.path) != stamp:
                    self._failed[module.path] = stamp
                    log.error("Plugin change not loaded, still serving the last good version: {error}",
                              error=str(err))

    def _update(self, module: PluginModule) -> None:
        """(Re-)import the module if its file changed since it was imported. Raises PluginError."""
        try:
            stamp = filestamp.stamp(module.path)
        except OSError as err:
            raise PluginError(f"plugin {module.shown}: cannot read it ({err.strerror})") from None
        if stamp == module.stamp:
            return
        previous = sys.modules.get(module.module_name)
        try:
            fresh = self._import(module)
            functions: dict[str, PluginFunction] = {}
            for call in self._calls_in_use():
                if call.module is not module:
                    continue
                function = functions.get(call.function_name) or _function(fresh, call.function_name, module)
                try:
                    function.check_arguments(call.arg_count)
                except TypeError as err:
                    raise PluginError(f"plugin {module.shown}: {call.function_name}() no longer takes "
                                      f"{call.arg_count} argument(s) ({err})") from None
                functions[call.function_name] = function
        except PluginError:
            if previous is None:
                sys.modules.pop(module.module_name, None)
            else:
                sys.modules[module.module_name] = previous
            raise
        if module.module is not None:
            log.info("Plugin reloaded: {plugin}", plugin=module.shown)
        module.module, module.functions, module.stamp = fresh, functions, stamp

    def _import(self, module: PluginModule) -> ModuleType:
        loader = _SourceOnlyLoader(module.module_name, module.path)
        spec = importlib.util.spec_from_file_location(module.module_name, module.path, loader=loader)
        assert spec is not None  # always, given a loader
        fresh = importlib.util.module_from_spec(spec)
        sys.modules[module.module_name] = fresh  # while it runs, for dataclasses and the like
        try:
            loader.exec_module(fresh)
        except Exception as err:
            line = _failure_line(err, module.path)
            problem = err.msg if isinstance(err, SyntaxError) else str(err)
            raise PluginError(f"plugin {module.shown}, line {line}: {type(err).__name__}: {problem}") from None
        return fresh


def _function(loaded: ModuleType | None, name: str, module: PluginModule) -> PluginFunction:
    function = getattr(loaded, name, None)
    if function is None:
        raise PluginError(f"plugin {module.shown}: no function {name!r}")
    if not callable(function):
        raise PluginError(f"plugin {module.shown}: {name!r} is not a function")
    try:
        return PluginFunction(function, name)
    except (TypeError, ValueError) as err:
        raise PluginError(f"plugin {module.shown}: cannot inspect {name!r} ({err})") from None
