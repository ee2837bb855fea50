"""User-facing errors: one line naming the problem and the fix; the CLI turns them into exit code 2."""


class UserError(Exception):
    """A problem the user can fix (bad config, missing stage output, mismatched files).

    The message must be a single line that says what is wrong and what to do about it.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def unreadable(path, exc: BaseException, command: str) -> UserError:
    """The one-line error for a file a stage wrote that no longer parses (truncated, overwritten, garbage)."""
    return UserError(f"{path} is corrupt or truncated ({type(exc).__name__}); rebuild it with `{command}`")
