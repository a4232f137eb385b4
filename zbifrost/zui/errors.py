"""The load-time error of the zUI engine, shared by the loader, the actions and the forms."""


class ZuiError(Exception):
    """A zUI file (or a value in it) that cannot be loaded; str() names the file and line."""
