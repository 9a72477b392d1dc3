"""Code blocks of the docs that name their file, for tests that run them as written."""

from __future__ import annotations

import re

#: A fenced block whose first line names its file: ```lang\n# NAME\n...```
_FILE_BLOCK = re.compile(r"^```\w+\n# ([\w.]+)\n(.*?)^```$", re.S | re.M)


def file_blocks(markdown: str, heading: str) -> dict[str, str]:
    """File name -> text of the fenced blocks under ``heading`` (a whole line
    such as ``## Testing your plugin``), up to the next heading of its level."""
    level = heading.split(" ")[0]
    start = markdown.index(f"\n{heading}\n") + 1
    end = markdown.find(f"\n{level} ", start + len(heading))
    section = markdown[start : end if end != -1 else len(markdown)]
    return dict(_FILE_BLOCK.findall(section))
