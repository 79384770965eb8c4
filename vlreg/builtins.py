"""Where each built-in component lives: ``{kind: {name: module}}``.

The registry imports a module on the first lookup of one of its names; the module
registers the component with :func:`vlreg.register`. A test checks that this table
and the decorators agree.
"""

BUILTINS: dict[str, dict[str, str]] = {
    "encoder": {},
    "bridge": {},
    "prompter": {},
    "llm": {},
    "dataset": {},
    "processor": {},
    "task": {},
    "runner": {},
    "metric": {},
    "suite": {},
}
