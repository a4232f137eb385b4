"""Edited by tests/test_zui_reload.py while a server runs."""


def version():
    return 1
