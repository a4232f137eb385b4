"""The one text of a YAML syntax error, for the config file, the tokens file and zUI files.

PyYAML's own message spans several lines and repeats the file name; operators get one line
instead, the same for every file zbifrost reads.
"""

import yaml


def yaml_error_text(what: str, err: yaml.YAMLError) -> str:
    """"<what>, line N: invalid YAML (<problem>)" for a yaml.YAMLError `err` in the file `what`
    names (e.g. "config file /etc/zbifrost.yaml"); without the line when PyYAML does not know it."""
    mark = getattr(err, "problem_mark", None)
    where = f", line {mark.line + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{what}{where}: invalid YAML ({problem})"
