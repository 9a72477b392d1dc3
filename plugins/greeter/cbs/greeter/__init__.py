"""The demo cells of CBS: ask a name, greet it, print the greeting."""

from cbs.greeter.cells import make_greet, make_print_greeting, make_prompt_name

__all__ = ["make_greet", "make_print_greeting", "make_prompt_name"]
