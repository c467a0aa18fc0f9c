"""Griffe extension: show the Sphinx roles of the docstrings (``:func:`name```) as inline code.

The package's docstrings cross-reference with Sphinx roles, which Markdown prints as they are
(":func: name"). This rewrites each role to its target in backticks; a leading ``~`` keeps only the last
component, as Sphinx does.
"""

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|obj|data|exc|const):`(~?)([^`]+)`")


def _code(match: re.Match) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
